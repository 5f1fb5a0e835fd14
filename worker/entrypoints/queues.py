"""Queue names, in one place (ops scale a worker per queue)."""
INGEST = "ingest"
CASES = "cases"
SMS = "sms"
LETTERS = "letters"
EMAIL = "email"
MAINTENANCE = "maintenance"

ALL = (INGEST, CASES, SMS, LETTERS, EMAIL, MAINTENANCE)
BY_CHANNEL = {"sms": SMS, "letter": LETTERS, "email": EMAIL}

from pathlib import Path

# Reference files the tests read; everything a test reads lives inside the repository.
TWILIO_DATA = Path(__file__).resolve().parent / "data" / "twilio"

"""Local-only tooling: the Twilio simulator and the embedded stack. Never shipped in the Lambda zip."""

"""The visitor conversation: its page token, its status and every change to it (start, activity, end, expiry,
retention, erasure), and reading conversations back. Nothing else writes a `Conversation` row."""

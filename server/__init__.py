"""avatar-bff: backend-for-frontend for Kaltura Conversational Avatar embeds."""

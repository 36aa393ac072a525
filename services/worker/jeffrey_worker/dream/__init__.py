"""The DreamEngine: consolidate a user's memories into dreams, batch by batch."""

"""Small helpers shared by every stage (atomic files, fingerprints, seeding)."""

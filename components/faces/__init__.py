"""Finding faces and turning them into aligned chips."""

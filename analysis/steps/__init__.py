"""Analysis steps; importing a module registers its steps."""

"""What is optimized: datasets, networks and test problems, registered as named tasks."""

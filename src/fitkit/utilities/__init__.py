"""Small helpers shared by the rest of fitkit: exceptions, seeding, device moves, rank-zero."""

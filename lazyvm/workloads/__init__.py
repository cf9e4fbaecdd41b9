"""What runs on the model: the workload registry and its runner (builtin), the side-by-side
comparison with real forks (compare), capture of real processes and their file
(snapshot), their replay (replay), Redis BGSAVE (redis) and parameter grids (sweep)."""

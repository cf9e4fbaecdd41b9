"""What runs on the model: the built-in workloads (builtin), the side-by-side comparison
with real forks (compare), capture and replay of real processes (snapshot), Redis BGSAVE
(redis) and parameter grids (sweep)."""

# expect: memory_limit
# options: --memory 64M
# message: Memory limit of 64 MiB
#
# Keeps 1 MiB blocks alive until the memory limit (64 MiB here) is reached:
# with a memory cgroup (as root) the kernel stops the run there; without one
# Python raises MemoryError. Either way the engine reports memory_limit.
blocks = []
while True:
    blocks.append(bytearray(1 << 20))  # zero-filled, so really in use

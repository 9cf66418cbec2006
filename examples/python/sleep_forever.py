# expect: wall_timeout
# options: --timeout 1
# stdout: sleeping
# message: Wall-clock limit
#
# Sleeping uses no CPU, so the wall-clock limit (1 s here) ends the run.
import time

print("sleeping")
while True:
    time.sleep(3600)

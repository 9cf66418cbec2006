# expect: time_limit
# options: --cpu-time 1
# message: CPU time limit
#
# A busy loop: the CPU-time limit (1 s here, default 10 s) stops it.
n = 0
while True:
    n += 1

# expect: output_limit
# options: --output-limit 4K
# stdout: line 1
# message: Output limit of 4 KiB
#
# Prints forever; the output cap (4 KiB here, 1 MiB by default) cuts it off
# exactly, adds a marker and stops the program: output_limit.
import itertools

for i in itertools.count(1):
    print(f"line {i}: all work and no play")

# expect: ok
# options: --stdin '10 20\n30\n'
# stdout: 3 numbers, sum = 60
#
# Reading all of standard input (given with --stdin) and summing the numbers.
import sys

numbers = [int(word) for word in sys.stdin.read().split()]
print(f"{len(numbers)} numbers, sum = {sum(numbers)}")

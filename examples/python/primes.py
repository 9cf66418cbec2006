# expect: ok
# stdout: primes below 300000: 25997
#
# CPU-heavy but within limits: count primes by plain trial division in pure
# Python (deliberately slow, about 0.3 s of CPU), far below the default 10 s limit.
def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    d = 3
    while d * d <= n:
        if n % d == 0:
            return False
        d += 2
    return True


limit = 300_000
print(f"primes below {limit}: {sum(map(is_prime, range(limit)))}")

# expect: ok
# stdout: Account(owner='Ada', balance=150)
# stdout: refused: insufficient funds
# stdout: richest: Grace
#
# Classes: a dataclass, a method that raises, a subclass overriding a method,
# and sorting objects by a key.
from dataclasses import dataclass


@dataclass
class Account:
    owner: str
    balance: int = 0

    def deposit(self, amount: int) -> None:
        self.balance += amount

    def withdraw(self, amount: int) -> None:
        if amount > self.balance:
            raise ValueError("insufficient funds")
        self.balance -= amount


class SavingsAccount(Account):
    rate = 0.5

    def add_interest(self) -> None:
        self.deposit(int(self.balance * self.rate))


ada = Account("Ada")
ada.deposit(200)
ada.withdraw(50)
print(ada)
try:
    ada.withdraw(1000)
except ValueError as e:
    print("refused:", e)

grace = SavingsAccount("Grace", 300)
grace.add_interest()
richest = max([ada, grace], key=lambda a: a.balance)
print("richest:", richest.owner, richest.balance)

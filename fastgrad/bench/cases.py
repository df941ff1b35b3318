"""The description of one benchmark case, shared by all suites."""
from dataclasses import asdict, dataclass, field


def fmt_n(n):
    """Compact size label: 1000000 -> '1e6', 2500 -> '2500'."""
    n = int(n)
    exp = len(str(n)) - 1
    if n == 10 ** exp and exp >= 2:
        return f"1e{exp}"
    if n % (10 ** exp) == 0 and exp >= 3:
        return f"{n // 10 ** exp}e{exp}"
    return str(n)


@dataclass
class Case:
    """One workload at one parameter point, run once per peer.

    ``ops`` is the number of graph operations (for per-op reporting).
    """

    suite: str
    workload: str
    params: dict
    peers: tuple
    ops: int = 0
    label: str = field(default="")

    def __post_init__(self):
        if not self.label:
            parts = [self.suite, self.workload]
            for key, value in self.params.items():
                parts.append(fmt_n(value) if isinstance(value, int) else str(value))
            self.label = " ".join(parts)

    def to_dict(self):
        """JSON-friendly form (also how cases travel to the worker)."""
        d = asdict(self)
        d["peers"] = list(self.peers)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["peers"] = tuple(d["peers"])
        return cls(**d)


TIERS = ("quick", "default", "full")

"""The permission matrix: every URL the project defines, and the status each role gets from it.

Each app's test folder has a `routes.py` with `routes(world) -> list[Route]`; `world` holds one persona per role
(`world.users[role]`, None for anonymous) plus a system and a programme, and a routes function may create the
objects its URLs need. tests/test_permissions.py requests every route as every role, and fails if the project
defines a URL that no routes module lists.
"""

from dataclasses import dataclass, field

ROLES = ["anonymous", "applicant", "reviewer", "assessor", "director", "admin"]

# Shorthands for expected statuses.
OK = 200
REDIRECT = 302
UNAUTHORISED = 401
FORBIDDEN = 403
NOT_FOUND = 404
NOT_ALLOWED = 405


def everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, status)


def signed_in(status: int, anonymous: int = REDIRECT) -> dict[str, int]:
    return {"anonymous": anonymous, **dict.fromkeys(ROLES[1:], status)}


@dataclass
class World:
    users: dict
    system: object
    programme: object
    extra: dict = field(default_factory=dict)


@dataclass
class Route:
    name: str  # the URL pattern's name, namespaced ("programmes:programme-list")
    url: str
    expected: dict[str, int]
    method: str = "get"
    data: dict | None = None
    api: bool = False  # API routes are requested with JSON and, for anonymous, answer 401/403 instead of redirecting

    def __post_init__(self):
        missing = set(ROLES) - set(self.expected)
        if missing:
            raise ValueError(f"route {self.name} has no expected status for {sorted(missing)}")

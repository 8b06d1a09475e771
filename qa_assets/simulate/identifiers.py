"""Realistic identifiers and personal data, generated many at a time from a numpy Generator.

Every generator takes ``(rng, n)`` and returns ``n`` strings. Card numbers pass the Luhn check; emails,
phone numbers, IPs, JWTs and API keys look like the real thing, so the ingestion's masking is tested on
values it has not seen.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import numpy as np

Generator = Callable[[np.random.Generator, int], list[str]]

FIRST_NAMES = (
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "maria",
    "wei",
    "yuki",
    "olga",
    "ahmed",
    "fatima",
    "lucas",
    "emma",
    "noah",
    "sofia",
    "mateo",
    "priya",
    "arjun",
    "chloe",
    "liam",
    "mia",
    "oliver",
    "ava",
    "ethan",
    "isabella",
    "hannah",
    "jonas",
    "lena",
    "pierre",
    "camille",
    "giulia",
)
LAST_NAMES = (
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "nguyen",
    "kim",
    "muller",
    "schmidt",
    "rossi",
    "dubois",
    "kowalski",
    "novak",
    "tanaka",
    "silva",
    "patel",
    "singh",
    "okafor",
    "hansen",
    "larsen",
    "fischer",
    "weber",
    "moreau",
    "costa",
    "ivanova",
)
MAIL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "gmx.de",
    "web.de",
    "orange.fr",
    "mail.ru",
    "yahoo.co.jp",
    "acme-corp.com",
)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "CHF", "SEK", "PLN", "AUD", "BRL")
COUNTRIES = ("US", "DE", "FR", "GB", "NL", "PL", "JP", "CA", "BR", "IN", "ES", "IT")
CITIES = (
    "Springfield",
    "Berlin",
    "Lyon",
    "Manchester",
    "Utrecht",
    "Krakow",
    "Osaka",
    "Toronto",
    "Curitiba",
    "Pune",
    "Valencia",
    "Turin",
    "Mountain View",
    "Seattle",
)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",  # noqa: E501
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Safari/605.1.15",  # noqa: E501
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",  # noqa: E501
    "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Mobile Safari/537.36",  # noqa: E501
    "okhttp/4.12.0",
    "curl/8.5.0",
)
ALNUM = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)
LOWER_ALNUM = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
MIXED = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)
B64URL = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def random_strings(rng: np.random.Generator, n: int, length: int, alphabet: np.ndarray = ALNUM) -> list[str]:
    if n == 0:
        return []
    codes = alphabet[rng.integers(0, len(alphabet), size=(n, length))]
    blob = codes.tobytes().decode("ascii")
    return [
        blob[start:stop]
        for start, stop in zip(range(0, n * length, length), range(length, (n + 1) * length, length))
    ]


def hex_ids(rng: np.random.Generator, n: int, nbytes: int) -> list[str]:
    """Lower-case hex ids (trace ids: 16 bytes, span ids: 8 bytes); never all zero."""
    raw = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    raw[:, 0] |= 1  # an all-zero id is invalid in OTLP
    blob = raw.tobytes().hex()
    width = nbytes * 2
    return [
        blob[start:stop]
        for start, stop in zip(range(0, n * width, width), range(width, (n + 1) * width, width))
    ]


def uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    blob = raw.tobytes().hex()
    return [
        f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        for h in (blob[start:stop] for start, stop in zip(range(0, n * 32, 32), range(32, (n + 1) * 32, 32)))
    ]


def luhn_numbers(rng: np.random.Generator, n: int) -> list[str]:
    """Card numbers with valid check digits: Visa (16), Mastercard (16), Amex (15)."""
    brand = rng.integers(0, 3, size=n)
    digits = rng.integers(0, 10, size=(n, 16))
    digits[brand == 0, 0] = 4
    digits[brand == 1, 0] = 5
    digits[brand == 1, 1] = rng.integers(1, 6, size=int((brand == 1).sum()))
    digits[brand == 2, 0] = 3
    digits[brand == 2, 1] = np.where(rng.random(int((brand == 2).sum())) < 0.5, 4, 7)
    lengths = np.where(brand == 2, 15, 16)
    out = []
    for row, length in zip(digits, lengths):
        body = row[: length - 1]
        # double every second digit from the right, starting with the rightmost body digit
        doubled = body[::-1].copy()
        doubled[::2] *= 2
        doubled[doubled > 9] -= 9
        check = (10 - doubled.sum() % 10) % 10
        out.append("".join(map(str, body)) + str(check))
    return out


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return len(digits) >= 12 and total % 10 == 0


def card_numbers(rng: np.random.Generator, n: int) -> list[str]:
    numbers = luhn_numbers(rng, n)
    spaced = rng.random(n) < 0.3
    return [" ".join(_groups_of_four(c)) if s else c for c, s in zip(numbers, spaced)]


def _groups_of_four(number: str) -> list[str]:
    return [number[start:stop] for start, stop in zip(range(0, len(number), 4), range(4, len(number) + 4, 4))]


def emails(rng: np.random.Generator, n: int) -> list[str]:
    first = rng.integers(0, len(FIRST_NAMES), n)
    last = rng.integers(0, len(LAST_NAMES), n)
    domain = rng.integers(0, len(MAIL_DOMAINS), n)
    style = rng.integers(0, 4, n)
    number = rng.integers(1, 999, n)
    out = []
    for f, la, d, s, k in zip(first, last, domain, style, number):
        fn, ln = FIRST_NAMES[f], LAST_NAMES[la]
        local = (f"{fn}.{ln}", f"{fn[0]}{ln}", f"{fn}{k}", f"{ln}.{fn}{k % 100}")[s]
        out.append(f"{local}@{MAIL_DOMAINS[d]}")
    return out


def phones(rng: np.random.Generator, n: int) -> list[str]:
    style = rng.integers(0, 4, n)
    a = rng.integers(200, 999, n)
    b = rng.integers(200, 999, n)
    c = rng.integers(1000, 9999, n)
    out = []
    for s, x, y, z in zip(style, a, b, c):
        out.append(
            (f"+1-{x}-{y}-{z}", f"+44 20 {y}{x % 10} {z}", f"+49 30 {x}{y}{z % 100:02d}", f"({x}) {y}-{z}")[s]
        )
    return out


def ipv4_public(rng: np.random.Generator, n: int) -> list[str]:
    first = rng.choice(np.array([23, 31, 46, 62, 77, 81, 89, 94, 109, 151, 176, 185, 188, 193, 203, 213]), n)
    rest = rng.integers(1, 255, size=(n, 3))
    return [f"{a}.{b}.{c}.{d}" for a, (b, c, d) in zip(first, rest)]


def ipv4_internal(rng: np.random.Generator, n: int) -> list[str]:
    rest = rng.integers(0, 255, size=(n, 2))
    return [f"10.42.{b}.{c + 1 if c < 254 else c}" for b, c in rest]


def ipv6s(rng: np.random.Generator, n: int) -> list[str]:
    groups = rng.integers(0, 65536, size=(n, 6))
    prefix = rng.choice(np.array(["2001:db8", "2a02:8108", "2600:1700", "2a01:e0a"]), n)
    return [f"{p}:{g[0]:x}:{g[1]:x}::{g[4]:x}:{g[5]:x}" for p, g in zip(prefix, groups)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWT_HEADER = _b64(b'{"alg":"RS256","typ":"JWT","kid":"k1-2026"}')


def jwts(rng: np.random.Generator, n: int) -> list[str]:
    subjects = rng.integers(100000, 9999999, n)
    issued = rng.integers(1_790_000_000, 1_800_000_000, n)
    signatures = random_strings(rng, n, 43, B64URL)
    out = []
    for subject, iat, signature in zip(subjects, issued, signatures):
        claims = '{"sub":"%d","iat":%d,"exp":%d,"scope":"read write"}' % (subject, iat, iat + 3600)
        out.append(f"{JWT_HEADER}.{_b64(claims.encode())}.{signature}")
    return out


def api_keys(rng: np.random.Generator, n: int) -> list[str]:
    style = rng.integers(0, 3, n)
    bodies = random_strings(rng, n, 32, MIXED)
    return [
        (f"sk_live_{b[:24]}", f"AKIA{b[:16].upper()}", f"ghp_{b}{b[:4]}")[s] for s, b in zip(style, bodies)
    ]


def bearer_tokens(rng: np.random.Generator, n: int) -> list[str]:
    return [f"Bearer {t}" for t in jwts(rng, n)]


def amounts(rng: np.random.Generator, n: int) -> list[str]:
    values = np.round(rng.lognormal(3.6, 0.9, n), 2)
    return [f"{v:.2f}" for v in values]


def ints(low: int, high: int) -> Generator:
    def gen(rng: np.random.Generator, n: int) -> list[str]:
        return [str(v) for v in rng.integers(low, high, n)]

    return gen


def choice(values: tuple[str, ...]) -> Generator:
    def gen(rng: np.random.Generator, n: int) -> list[str]:
        return [values[i] for i in rng.integers(0, len(values), n)]

    return gen


def durations_ms(rng: np.random.Generator, n: int) -> list[str]:
    return [str(v) for v in np.maximum(1, rng.lognormal(3.0, 0.8, n)).astype(int)]


def ibans(rng: np.random.Generator, n: int) -> list[str]:
    country = rng.choice(np.array(["DE", "FR", "NL", "ES", "IT"]), n)
    check = rng.integers(10, 99, n)
    body = random_strings(rng, n, 18, np.frombuffer(b"0123456789", dtype=np.uint8))
    return [f"{c}{k}{b}" for c, k, b in zip(country, check, body)]


PRODUCTS = tuple(
    "".join(chr(c) for c in row)
    for row in ALNUM[np.random.default_rng(20261102).integers(0, len(ALNUM), size=(40, 10))]
)

GENERATORS: dict[str, Generator] = {
    "uuid": uuids,
    "order_id": uuids,
    "request_id": lambda rng, n: hex_ids(rng, n, 8),
    "session_id": lambda rng, n: random_strings(rng, n, 24, LOWER_ALNUM),
    "user_id": ints(10_000, 9_999_999),
    "account_id": ints(1_000_000, 99_999_999),
    "customer_id": lambda rng, n: [f"C{v}" for v in rng.integers(100000, 999999, n)],
    "email": emails,
    "phone": phones,
    "card": card_numbers,
    "ip": ipv4_public,
    "internal_ip": ipv4_internal,
    "ipv6": ipv6s,
    "jwt": jwts,
    "bearer": bearer_tokens,
    "api_key": api_keys,
    "amount": amounts,
    "currency": choice(CURRENCIES),
    "country": choice(COUNTRIES),
    "city": choice(CITIES),
    "zip": ints(10000, 99999),
    "sku": choice(PRODUCTS),
    "qty": ints(1, 6),
    "count": ints(1, 500),
    "small": ints(0, 12),
    "n": ints(1, 40),
    "duration_ms": durations_ms,
    "ms": ints(1, 900),
    "fast_ms": ints(1, 25),
    "secs": lambda rng, n: [f"{v:.3f}" for v in rng.uniform(4, 19, n)],
    "pct": lambda rng, n: [f"{v:.1f}" for v in rng.uniform(40, 99.9, n)],
    "mb": ints(64, 2048),
    "bytes": ints(200, 90_000),
    "port": ints(32768, 60999),
    "pid": ints(7, 4_000_000),
    "tracking_id": lambda rng, n: [f"1Z{s}" for s in random_strings(rng, n, 16)],
    "hex": lambda rng, n: hex_ids(rng, n, 4),
    "iban": ibans,
    "user_agent": choice(USER_AGENTS),
    "partner": choice(("stripe", "adyen", "paypal", "klarna", "worldline")),
    "job": choice(
        ("reindex", "cleanup-expired", "refresh-materialized-views", "sync-rates", "compact-sessions")
    ),
    "carrier": choice(("UPS", "DHL", "FedEx", "USPS", "PostNL")),
    "state": choice(("PENDING", "CONFIRMED", "SETTLED", "CANCELLED", "FAILED")),
    "thread": lambda rng, n: [f"http-nio-8080-exec-{v}" for v in rng.integers(1, 200, n)],
}


def generate(name: str, rng: np.random.Generator, n: int) -> list[str]:
    try:
        return GENERATORS[name](rng, n)
    except KeyError:
        raise KeyError(f"no generator for placeholder {{{name}}}") from None

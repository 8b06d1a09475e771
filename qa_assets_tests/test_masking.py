"""Masking: every kind on real-looking positives, the look-alikes that must stay, stable keyed tokens,
valid JSON after masking, counts per kind, and the vectorized path agreeing with the single-value path."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re

import polars as pl
import pytest

from qa_assets.lib.masking import KINDS, TOKEN_PATTERN, mask_columns, mask_text, token_for

KEY = b"test-masking-key"
TOKEN = re.compile(TOKEN_PATTERN)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)

# (text, kind, the sensitive part that must disappear, text that must stay around it)
POSITIVES = [
    ("contact jane.doe+qa@example.co.uk today", "email", "jane.doe+qa@example.co.uk", "contact "),
    ("From: <Bob.Smith@Mail.Example.COM>", "email", "Bob.Smith@Mail.Example.COM", "From: <"),
    ("client 203.0.113.7 connected", "ipv4", "203.0.113.7", "client "),
    ("peer=10.1.2.3:8443 refused", "ipv4", "10.1.2.3", ":8443 refused"),
    ("subnet 10.8.0.0/16 ok", "ipv4", "10.8.0.0", "/16 ok"),
    ("X-Forwarded-For: 198.51.100.23", "ipv4", "198.51.100.23", "X-Forwarded-For: "),
    ("from 2001:db8:85a3::8a2e:370:7334 port 443", "ipv6", "2001:db8:85a3::8a2e:370:7334", " port 443"),
    ("full 2001:0db8:85a3:0000:0000:8a2e:0370:7334 end", "ipv6", "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
     "full "),
    ("link fe80::1ff:fe23:4567:890a%eth0 up", "ipv6", "fe80::1ff:fe23:4567:890a", "%eth0 up"),
    ("mapped ::ffff:192.0.2.128 seen", "ipv6", "::ffff:192.0.2.128", "mapped "),
    ("url http://[2001:db8::1]:8080/health", "ipv6", "2001:db8::1", "]:8080/health"),
    ("paid with 4111 1111 1111 1111 ok", "card", "4111 1111 1111 1111", "paid with "),
    ("card=5555555555554444.", "card", "5555555555554444", "card="),
    ("amex 3782-822463-10005 declined", "card", "3782-822463-10005", "amex "),
    ("pan 6011111111111117 ok", "card", "6011111111111117", "pan "),
    ("call +14155552671 now", "phone", "+14155552671", "call "),
    ("office (415) 555-2671 ext", "phone", "(415) 555-2671", "office "),
    ("mobile 415-555-2671.", "phone", "415-555-2671", "mobile "),
    ("london +44 20 7946 0958 desk", "phone", "+44 20 7946 0958", "london "),
    ("us +1 (415) 555-2671", "phone", "+1 (415) 555-2671", "us "),
    ("Authorization: Bearer mF_9.B5f-4.1JqM", "bearer", "mF_9.B5f-4.1JqM", "Authorization: Bearer "),
    ("auth bearer 7f3c2a91d0e44b6f8a5e ok", "bearer", "7f3c2a91d0e44b6f8a5e", "auth bearer "),
    ("Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l", "bearer", "YWxhZGRpbjpvcGVuc2VzYW1l",
     "Authorization: Basic "),
    (f"token {JWT} expired", "jwt", JWT, "token "),
    (f"Authorization: Bearer {JWT}", "jwt", JWT, "Authorization: Bearer "),
    ("stripe key sk_live_4eC39HqLyjWDarjtT1zdp7dc used", "api_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
     "stripe key "),
    ("aws AKIAIOSFODNN7EXAMPLE", "api_key", "AKIAIOSFODNN7EXAMPLE", "aws "),
    ("gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "api_key", "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
     "gh "),
    ("slack xoxb-2048-1024-Ab3dEf9hIjK", "api_key", "xoxb-2048-1024-Ab3dEf9hIjK", "slack "),
    ("maps AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "api_key", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
     "maps "),
    ("login password=hunter2 failed", "secret", "hunter2", "login password="),
    ("set pwd: Welcome", "secret", "Welcome", "set pwd: "),  # a password can be a plain word
    ("db.password: S3cr3t!pass", "secret", "S3cr3t!pass", "db.password: "),
    ("X-Api-Key: 9f8e7d6c5b4a", "secret", "9f8e7d6c5b4a", "X-Api-Key: "),
    ('{"client_secret": "abc\\"def", "user": "x"}', "secret", 'abc\\"def', '{"client_secret": "'),
    ("config accessToken => 'q1w2e3r4'", "secret", "q1w2e3r4", "config accessToken => '"),
    ("dsn postgres://app:pa55word@db.internal:5432/shop", "secret", "pa55word", "postgres://app:"),
]


@pytest.mark.parametrize(("text", "kind", "sensitive", "kept"), POSITIVES)
def test_sensitive_values_are_masked_with_their_kind(text: str, kind: str, sensitive: str, kept: str) -> None:
    masked, counts = mask_columns(pl.DataFrame({"body": [text]}), ["body"], KEY)
    result = masked.item(0, "body")
    assert sensitive not in result
    assert kept in result
    assert re.search(rf"<{kind}:[0-9a-f]{{12}}>", result), result
    assert counts[kind] == 1
    assert sum(counts.values()) == 1, counts


LOOK_ALIKES = [
    # versions
    "upgraded to 1.2.3 from v2.10.1",
    "release 1.2.3.4-rc1 is out",
    "Windows 10.0.19041.1 build",
    "agent v1.2.3.4 started",
    "version 1.2.3.4",
    'attrs {"service.version": "1.2.3.4", "app_version": "4.3.2.1"}',
    "oid 1.3.6.1.4.1.2021 walk",
    "debian 1.2.3.4+dfsg1 package",
    "Package_for_KB3121255~31bf3856ad364e35~amd64~~6.1.1.0, ApplicableState: 112",
    # durations, timestamps, dates
    "took 123ms, then 1.5s, total 00:01:02.123",
    "at 2024-01-15T10:00:01.123+01:00 and 2024-01-15 10:00:01,234 and 15/01/2024",
    "tz +01:00 offset +0100 epoch 1705312801 ms 1705312801123 ns 1705312801123456789",
    # identifiers
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 merged",
    "order 98765432 user_id=123456 ORD-2024-000123",
    "ids 4111111111111112 1234567890123456 9999999999999999999",
    "id4111111111111111 and order_5555555555554444",
    "block blk_-6952295868487656571 and balance -4111111111111111",  # Luhn-valid, but glued to an id
    # ports, status codes, sizes
    "listening on localhost:8080 and :443, status=503 code 200",
    "heap 1048576 bytes, 1.5GB, 512MiB, 3.2 TB",
    # phone look-alikes
    "digits 14155552671 and 123-456-7890 and 2024-415-555-2671",
    # email look-alikes
    "asset icon@2x.png and logo@1.5x.jpg, root@localhost, left-pad@1.3.0",
    # IPv6 look-alikes
    ":: and 10:00:01 and std::vector<int> and Foo::Bar::baz and 00:1A:2B:3C:4D:5E",
    # addresses that identify no host
    "bind 0.0.0.0:80 and 127.0.0.1 and ::1",
    # leading zeros are not an address
    "serial 192.168.001.001",
    # token and secret look-alikes
    "missing bearer token",
    "Bearer authentication failed",
    "use sk-learn and task-queue and disk_live_total, MAKIAVELLI",
    "max_tokens=512 token_count=5 tokens: 12 secret_name=db key=user:42",
    "password: null, password=***, token=\"\", secret: [redacted] and empty password=",
    "Priority: 20, Token: Token { kind: ContainerToken }",
    "eyJub3Rqc29u.eyJhYmMi.xyz is not a JWT",
]


@pytest.mark.parametrize("text", LOOK_ALIKES)
def test_look_alikes_stay_unmasked(text: str) -> None:
    assert mask_text(text, KEY) == text


def test_token_is_the_documented_keyed_hash_and_stable() -> None:
    expected = "<email:" + hmac.new(KEY, b"email:bob@example.com", hashlib.sha256).hexdigest()[:12] + ">"
    assert token_for("email", "bob@example.com", KEY) == expected
    long_key = bytes(range(100))  # longer than SHA-256's block: hashed first, as HMAC specifies
    digest = hmac.new(long_key, "phone:+14155552671".encode(), hashlib.sha256).hexdigest()[:12]
    assert token_for("phone", "+14155552671", long_key) == f"<phone:{digest}>"
    # normalization: e-mail case does not split a value into two tokens
    assert mask_text("Bob@Example.COM", KEY) == expected
    assert mask_text("mail bob@example.com twice bob@example.com", KEY) == f"mail {expected} twice {expected}"
    # separators do not split a card either
    assert mask_text("4111 1111 1111 1111", KEY) == mask_text("4111-1111-1111-1111", KEY)


def test_tokens_differ_per_key_and_per_value() -> None:
    assert mask_text("ip 10.0.0.1", KEY) != mask_text("ip 10.0.0.1", b"another-key")
    assert mask_text("ip 10.0.0.1", KEY) != mask_text("ip 10.0.0.2", KEY)


def test_token_is_the_same_in_another_process(tmp_path) -> None:
    import subprocess
    import sys

    script = "from qa_assets.lib.masking import mask_text; print(mask_text('user bob@example.com', b'k1'))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == mask_text("user bob@example.com", b"k1")


def test_later_kinds_do_not_touch_tokens() -> None:
    masked = mask_text("password=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc and phone +14155552671", KEY)
    assert masked.count("<") == 2
    assert re.fullmatch(r"password=<jwt:[0-9a-f]{12}> and phone <phone:[0-9a-f]{12}>", masked)
    # masking twice changes nothing
    assert mask_text(masked, KEY) == masked


def _json_documents() -> list[str]:
    documents = [
        {"user.email": "jane@example.com", "net.peer.ip": "10.20.30.40", "http.status_code": 200},
        {"card": 4111111111111111, "cards": [5555555555554444, 12], "epoch": 1705312801123},
        {"msg": "line one\nbob@example.com said \"call +14155552671\"", "path": "C:\\temp\\10.0.0.9"},
        {"password": 123456789, "token": True, "secret": None, "apiKey": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
        {"nested": json.dumps({"password": "p@ss\"word", "ip": "192.0.2.1", "mail": "a@b.io"})},
        {"headers": {"Authorization": f"Bearer {JWT}", "X-Api-Key": "abc123def456"}},
        {"unicode": "caf\u00e9 jane@example.com \u2014 2001:db8::1", "tab": "\t10.0.0.7\t"},
        ["+44 20 7946 0958", "4111 1111 1111 1111", {"v": "1.2.3.4"}],
    ]
    texts = []
    for document in documents:
        texts.append(json.dumps(document))
        texts.append(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
    return texts


def test_json_text_stays_valid_json() -> None:
    texts = _json_documents()
    masked, counts = mask_columns(pl.DataFrame({"attributes": texts}), ["attributes"], KEY)
    for original, result in zip(texts, masked.get_column("attributes").to_list(), strict=True):
        parsed = json.loads(result)  # raises when masking broke the JSON
        flat = json.dumps(parsed, ensure_ascii=False)
        for sensitive in ("jane@example.com", "10.20.30.40", "4111111111111111", "5555555555554444",
                          "bob@example.com", "+14155552671", "123456789", "sk_live_", "192.0.2.1", "p@ss",
                          "abc123def456", "2001:db8::1", "10.0.0.7", "10.0.0.9", "7946 0958"):
            assert sensitive not in flat, (original, result)
        assert original == result or TOKEN.search(result)
    assert counts["card"] == 6  # two bare JSON numbers and one string, in both spellings
    # look-alikes inside JSON stay
    assert any('"1.2.3.4"' in text for text in masked.get_column("attributes").to_list())
    assert any("1705312801123" in text for text in masked.get_column("attributes").to_list())


def test_counts_per_kind_over_several_columns() -> None:
    frame = pl.DataFrame(
        {
            "body": ["a@example.com and b@example.com", "from 10.0.0.1", None, "nothing here", "v1.2.3.4"],
            "attributes": [
                '{"ip": "10.0.0.1"}', None, '{"card": "4111111111111111"}', "{}", '{"p": "+14155552671"}'
            ],
            "service": ["cart", "cart", "cart", "cart", "cart"],
        }
    )
    masked, counts = mask_columns(frame, ["body", "attributes"], KEY)
    assert set(counts) == set(KINDS)
    assert counts == {**dict.fromkeys(KINDS, 0), "email": 2, "ipv4": 2, "card": 1, "phone": 1}
    assert masked.get_column("body").to_list()[2] is None
    assert masked.get_column("service").to_list() == frame.get_column("service").to_list()
    assert masked.get_column("body")[4] == "v1.2.3.4"
    # the same address in two columns gives the same token, so it still groups
    ip_token = re.search(r"<ipv4:[0-9a-f]{12}>", masked.get_column("body")[1]).group(0)
    assert ip_token in masked.get_column("attributes")[0]


def test_vectorized_equals_single_value_path() -> None:
    """Rows share one automaton in the vectorized path: a value found in one row must not be replaced
    inside a look-alike in another (10.0.0.1 vs v10.0.0.1 vs 10.0.0.1-rc1)."""
    fragments = [
        "10.0.0.1", "v10.0.0.1", "10.0.0.1-rc1", "110.0.0.15", "version 10.0.0.1", "server 10.0.0.1",
        "ip=10.0.0.1", "x10.0.0.1", "bob@example.com", "xbob@example.com", "4111111111111111",
        "94111111111111111", "4111 1111 1111 1111", "+14155552671", "1+14155552671", "415-555-2671",
        "9415-555-2671", "2001:db8::1", "addr:2001:db8::1", "2001:db8::1:8080", "password=hunter2",
        "mypassword=hunter2", "old_password: hunter2", f"Bearer {JWT}", JWT, "x" + JWT,
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "ask_live_4eC39HqLyjWDarjtT1zdp7dc", "\\n10.0.0.1",
        '\\"bob@example.com\\"',
        "took 123ms", "1.2.3", "trace 4bf92f3577b34da6a3ce929d0e0e4736", "::", "std::map",
    ]
    rng = random.Random(11)
    texts = [" ".join(rng.choice(fragments) for _ in range(rng.randint(1, 4))) for _ in range(100)]
    glue = [",", ".", ";", ")", ""]
    texts += [rng.choice(fragments) + rng.choice(glue) + rng.choice(fragments) for _ in range(60)]
    masked, _ = mask_columns(pl.DataFrame({"body": texts}), ["body"], KEY)
    for text, vectorized in zip(texts, masked.get_column("body").to_list(), strict=True):
        assert vectorized == mask_text(text, KEY), text


def test_bad_arguments_get_clear_errors() -> None:
    frame = pl.DataFrame({"body": ["x"], "count": [1]})
    with pytest.raises(ValueError, match="not in the frame"):
        mask_columns(frame, ["missing"], KEY)
    with pytest.raises(ValueError, match="not text"):
        mask_columns(frame, ["count"], KEY)
    with pytest.raises(ValueError, match="non-empty bytes"):
        mask_columns(frame, ["body"], b"")


def test_empty_and_all_null_columns() -> None:
    frame = pl.DataFrame({"body": [None, None]}, schema={"body": pl.String})
    masked, counts = mask_columns(frame, ["body"], KEY)
    assert masked.get_column("body").to_list() == [None, None]
    assert sum(counts.values()) == 0
    empty, counts = mask_columns(pl.DataFrame({"body": []}, schema={"body": pl.String}), ["body"], KEY)
    assert empty.height == 0 and sum(counts.values()) == 0

"""Masking of personal data and secrets before anything is stored.

Every sensitive value is replaced by a token that names its kind and carries a keyed hash of the value::

    <kind:hhhhhhhhhhhh>    e.g. <email:3f9a1c0b2e7d>

``hhhhhhhhhhhh`` is the first 12 hex characters of ``HMAC-SHA256(key, kind + ":" + normalized value)``.
The same value under the same key gives the same token in every run and process, so masked values still
group (same user, same client address); without the key the value cannot be recovered or confirmed by
guessing. Tokens hold only ``<``, ``>``, ``:``, lower-case letters, digits and ``_`` - no quotes or
backslashes - so masking JSON text keeps it valid JSON. ``TOKEN_PATTERN`` matches a token (template
mining can treat tokens as parameters).

Kinds, in the order they are applied (earlier kinds protect their text from later ones):

==========  ==========================================================================================
``jwt``     three to five base64url segments whose header decodes to a JSON object with ``alg``/``typ``
``bearer``  the credential after ``Bearer`` (looks random: a digit, mixed case or ``._~+/=``), and after
            ``Basic`` when it decodes to ``user:password``; the scheme word stays
``api_key`` well-known key formats: Stripe ``sk_/rk_/pk_live|test_``, AWS ``AKIA``/``ASIA``..., GitHub
            ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, Slack ``xox[abposr]-``, Google
            ``AIza``, GitLab ``glpat-``, npm ``npm_``, OpenAI-style ``sk-``, SendGrid ``SG.``
``secret``  the value of a key whose last word is password/passwd/pwd/passphrase/secret/token/
            credential(s)/apikey or ``<api|access|secret|private|signing|encryption|client|master> key``,
            in ``key=value``, ``key: value``, ``key => value`` and JSON ``"key": "value"`` shapes; and the
            password in URL user-info (``scheme://user:password@host``)
``email``   ``local@domain.tld`` with an alphabetic top-level domain (``icon@2x.png`` stays)
``ipv6``    full and compressed IPv6, IPv4-mapped, zone kept outside the token (``::`` and ``::1`` stay)
``ipv4``    a dotted quad, every octet 0-255 without leading zeros, not glued to a word or a suffix
            (``v1.2.3.4``, ``1.2.3.4-rc1``, ``1.2.3.4.5`` stay) and not after a version-like word
            (``version``, ``ver``, ``v``, ``build``, ``release``, ``firmware``, ``rev``, ``tag``, or a key
            ending in one, such as ``service.version``); ``0.0.0.0`` and ``127.x`` stay
``card``    13-19 digits, contiguous or in groups of 4 (Amex 4-6-5), with a card network's prefix and
            length, passing the Luhn check
``phone``   E.164 (``+14155552671``), international with separators (``+44 20 7946 0958``) with 9-15
            digits, North American ``(415) 555-2671`` / ``415-555-2671`` / ``415.555.2671`` with valid
            area and exchange codes; bare digit runs are not phone numbers
==========  ==========================================================================================

Normalization before hashing: e-mail lower-cased; IP addresses in canonical form; card digits only; phone
``+`` and digits; everything else as written. A value glued to surrounding word characters or dots
(``id4111111111111111``, ``x10.0.0.1``, a hex hash containing a digit run) is not masked: it is part of a
bigger identifier.

How it runs, per kind: a cheap ``str.contains`` prefilter picks the rows; ``str.extract_all`` takes the
candidate matches (each pattern also takes the word characters around a value and any JSON escape in
front of it, so that a match always starts where a token would); the candidates - the distinct ones when
they repeat - are split and checked with polars expressions (octets, formats, Luhn in numpy); Python looks
only at small distinct sets (key names, JWT headers, words before an address, Basic credentials), at IPv6
candidates (``ipaddress`` validates and canonicalizes them) and hashes each distinct value once. A row
with one candidate is rebuilt by splitting it at that candidate (it occurs once: a second occurrence would
be a second candidate); rows with several are replaced with Aho-Corasick (``str.replace_many``), longest
candidate first with leftmost semantics and rejected candidates mapped to themselves, so that a value is
never replaced inside a bigger look-alike. Work is proportional to the rows that hold candidates.

JSON: a card written as a bare JSON number inside an object or array is masked as a JSON string
(``"card": 4111111111111111`` -> ``"card":"<card:...>"``, that row re-serialized compactly). A text that is
nothing but a number is treated as text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import orjson
import polars as pl

TOKEN_PATTERN = r"<[a-z][a-z0-9_]*:[0-9a-f]{12}>"
KINDS: tuple[str, ...] = ("jwt", "bearer", "api_key", "secret", "email", "ipv6", "ipv4", "card", "phone")

# Zero or more JSON string escapes (\n, \", \\, \u00e9) directly before a value: the match takes them so
# that a replacement never splits an escape sequence (which would break JSON).
_ESC = r"(?:\\(?:u[0-9A-Fa-f]{4}|[^u]))*"
_ESC_AND_BODY = r"(?s)^(?P<esc>" + _ESC + r")(?P<body>.*)$"

# decide(candidates) -> lead, value, trail: the candidate's text (``body``, without leading escapes) becomes
# lead + token(value) + trail; a null value keeps the candidate as written.
Decide = Callable[[pl.DataFrame], pl.DataFrame]


@dataclass(frozen=True)
class _Family:
    """One way a kind shows up: a prefilter, a candidate pattern (Rust regex) and a vectorized check."""

    kind: str
    prefilter: str | Callable[[pl.Expr], pl.Expr]  # a regex, or a function of the text giving a boolean
    pattern: str
    decide: Decide

    def may_contain(self, text: pl.Expr) -> pl.Expr:
        """True where the text may hold a value of this family (a superset: the pattern decides)."""
        if isinstance(self.prefilter, str):
            return text.str.contains(self.prefilter)
        return self.prefilter(text)


def token_for(kind: str, normalized_value: str, key: bytes) -> str:
    """The mask token of one already-normalized value: ``<kind:`` + 12 hex of HMAC-SHA256 + ``>``."""
    return _Tokenizer(key)(kind, normalized_value)


class _Tokenizer:
    """HMAC-SHA256 with the key's inner and outer states computed once (RFC 2104), about twice as fast
    as ``hmac.digest`` per value; each distinct value is hashed once per call."""

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or not key:
            raise ValueError("masking key must be non-empty bytes (set the project's masking key setting)")
        block = bytes(key) if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def __call__(self, kind: str, value: str) -> str:
        inner = self._inner.copy()
        inner.update(f"{kind}:{value}".encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"<{kind}:{outer.hexdigest()[:12]}>"

    def many(self, kind: str, values: list[str | None]) -> list[str | None]:
        """Tokens for a column of values (None stays None); a repeated value is hashed once. The loop is
        written out because it runs once per distinct sensitive value."""
        prefix = f"{kind}:"
        inner_copy, outer_copy = self._inner.copy, self._outer.copy
        cache: dict[str, str] = {}
        tokens: list[str | None] = []
        append = tokens.append
        for value in values:
            if value is None:
                append(None)
                continue
            token = cache.get(value)
            if token is None:
                inner = inner_copy()
                inner.update((prefix + value).encode())
                outer = outer_copy()
                outer.update(inner.digest())
                token = cache[value] = f"<{kind}:{outer.hexdigest()[:12]}>"
            append(token)
        return tokens


# ------------------------------------------------------------------------------------------ helpers


def _groups(frame: pl.DataFrame, regex: str) -> pl.DataFrame:
    """The named groups of ``regex`` matched against the whole ``body`` (nulls where it does not match)."""
    return frame.select(pl.col("body").str.extract_groups(regex)).unnest("body")


def _result(lead: pl.Expr, value: pl.Expr, trail: pl.Expr) -> list[pl.Expr]:
    return [lead.alias("lead"), value.alias("value"), trail.alias("trail")]


def _accepted_by(values: pl.Series, check: Callable[[str], bool]) -> pl.Series:
    """A Python check over the distinct values of a (small) column, as a boolean column."""
    distinct = values.drop_nulls().unique().to_list()
    passing = [value for value in distinct if check(value)]
    return values.is_in(pl.Series(passing, dtype=pl.String).implode()).fill_null(False)


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD_SEPARATORS = re.compile(r"[._\-\s\"'\\:=]+")


@lru_cache(maxsize=4096)
def _key_words(key: str) -> tuple[str, ...]:
    """`service.version`, `appVersion`, `X-Api-Key` -> lower-case words."""
    return tuple(w.lower() for part in _WORD_SEPARATORS.split(key) for w in _CAMEL.split(part) if w)


# ---------------------------------------------------------------------------------------------- jwt


@lru_cache(maxsize=1024)
def _is_jwt_header(segment: str) -> bool:
    try:
        header = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (binascii.Error, ValueError):
        return False
    return isinstance(header, dict) and bool({"alg", "typ", "enc"} & header.keys())


def _decide_jwt(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(candidates, r"^(?P<jwt>eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2,4}?)(?P<dots>\.*)$")
    header_ok = _accepted_by(parts.get_column("jwt").str.split(".").list.first(), _is_jwt_header)
    return parts.select(_result(pl.lit(""), pl.when(header_ok).then(pl.col("jwt")), pl.col("dots")))


# ------------------------------------------------------------------------------------------- bearer


def _is_basic_credential(credential: str) -> bool:
    try:
        decoded = base64.b64decode(credential, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def _decide_bearer(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates,
        r"^(?P<scheme>(?i:bearer|basic))(?P<space>[ \t]+)"
        r"(?P<credential>[A-Za-z0-9._~+/-]*?[A-Za-z0-9_~+/-]=*)"
        r"(?P<dots>\.*)$",
    )
    credential = pl.col("credential")
    # a credential rather than a word: long enough, with a digit, punctuation or inner capitals
    looks_random = (credential.str.len_chars() >= 8) & (
        credential.str.contains(r"[0-9._~+/=]")
        | ((credential.str.slice(1).str.count_matches("[A-Z]") >= 2) & credential.str.contains("[a-z]"))
    )
    is_basic = pl.col("scheme").str.to_lowercase() == "basic"
    basic = parts.filter(is_basic).get_column("credential")
    basic_ok = parts.get_column("credential").is_in(
        pl.Series([c for c in basic.unique().to_list() if _is_basic_credential(c)], dtype=pl.String).implode()
    )
    accepted = pl.when(is_basic).then(pl.lit(basic_ok)).otherwise(looks_random)
    return parts.select(
        _result(pl.col("scheme") + pl.col("space"), pl.when(accepted).then(credential), pl.col("dots"))
    )


# ------------------------------------------------------------------------------------------ api_key

_API_KEY_PREFIXES = (
    r"sk_live_|sk_test_|rk_live_|rk_test_|pk_live_|pk_test_|AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA|"
    r"gh[pousr]_|github_pat_|xox[abposr]-|AIza|glpat-|npm_|sk-|SG\."
)
_API_KEY = (
    r"(?:[sr]k|pk)_(?:live|test)_[0-9A-Za-z]{10,}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"
    r"|github_pat_[A-Za-z0-9_]{22,255}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,250}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|npm_[A-Za-z0-9]{36}"
    r"|sk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_-]{20,}"
    r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"
)


def _decide_api_key(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(candidates, r"^(?P<key>" + _API_KEY + r")(?P<dots>\.*)$")
    key = pl.col("key")
    # `sk-some-long-hyphenated-name` is a name, not a key
    accepted = ~(key.str.starts_with("sk-") & ~key.str.contains("[0-9]"))
    return parts.select(_result(pl.lit(""), pl.when(accepted).then(key), pl.col("dots")))


# ------------------------------------------------------------------------------------------- secret

_SECRET_LAST_WORDS = frozenset(
    {"password", "passwd", "pwd", "passphrase", "secret", "token", "credential", "credentials", "apikey",
     "secretkey", "accesskey", "privatekey", "passcode"}
)
_KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "signing", "encryption", "client", "master"}
)


_PASSWORD_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "passcode"})


def _is_password_key(key: str) -> bool:
    words = _key_words(key)
    return bool(words) and words[-1] in _PASSWORD_WORDS


def _is_secret_key(key: str) -> bool:
    words = _key_words(key)
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS:
        return True
    return words[-1] == "key" and len(words) >= 2 and words[-2] in _KEY_QUALIFIERS


_EMPTY_VALUES = ["", "null", "none", "nil", "true", "false", "undefined"]


def _decide_secret_value(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates,
        r"(?s)^(?P<key>[A-Za-z0-9_.-]+)(?P<sep>(?:\\?[\"'])?[ \t]*(?:=>|[:=])[ \t]*)(?P<raw>.+)$",
    )
    raw, sep = pl.col("raw"), pl.col("sep")
    opening = (
        pl.when(raw.str.starts_with('\\"')).then(pl.lit('\\"'))
        .when(raw.str.starts_with('"')).then(pl.lit('"'))
        .when(raw.str.starts_with("'")).then(pl.lit("'"))
        .otherwise(pl.lit(""))
    )
    length = raw.str.len_chars()
    inner = (
        pl.when(opening == '\\"').then(raw.str.slice(2, length - 4))
        .when(opening != "").then(raw.str.slice(1, length - 2))
        .otherwise(raw)
    )
    json_key = sep.str.contains(":", literal=True)
    # a bare value after a JSON key (a number) becomes a JSON string, so the JSON stays valid
    wrap = (
        pl.when(opening != "").then(opening)
        .when(json_key & sep.str.starts_with('\\"')).then(pl.lit('\\"'))
        .when(json_key & sep.str.starts_with('"')).then(pl.lit('"'))
        .otherwise(pl.lit(""))
    )
    key_ok = _accepted_by(parts.get_column("key"), _is_secret_key)
    password_key = _accepted_by(parts.get_column("key"), _is_password_key)
    accepted = (
        pl.lit(key_ok)
        # a password can be any word; after token/secret/key a capitalized word is a type name
        # (`Token: Token { kind: ... }`), not a credential
        & (pl.lit(password_key) | ~inner.str.contains(r"^[A-Z][a-z]+$"))
        & ~inner.str.strip_chars().str.to_lowercase().is_in(_EMPTY_VALUES)
        & ~inner.str.contains(TOKEN_PATTERN)  # already masked by an earlier kind (a JWT, a key)
        & inner.str.contains(r"[\p{L}\p{N}]")
        & ~inner.str.contains(r"^[*xX#.]+$")  # already redacted by the producer
    )
    return parts.select(_result(pl.col("key") + sep + wrap, pl.when(accepted).then(inner), wrap))


def _decide_url_password(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates,
        r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@\"'<>\\:]+:)(?P<password>[^\s/?#@\"'<>\\]+)@$",
    )
    password = pl.col("password")
    return parts.select(
        _result(pl.col("head"), pl.when(~password.str.contains(TOKEN_PATTERN)).then(password), pl.lit("@"))
    )


# -------------------------------------------------------------------------------------------- email


def _decide_email(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates, r"^(?P<local>[A-Za-z0-9._%+-]+)@(?P<domain>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)$"
    )
    local, domain = pl.col("local"), pl.col("domain")
    accepted = (
        ~local.str.starts_with(".")
        & ~local.str.ends_with(".")
        & ~local.str.contains("..", literal=True)
        & ~domain.str.contains(r"(?:^|\.)-|-(?:\.|$)")
        & domain.str.contains(r"\.(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9-]{2,59})$")  # a top-level domain
        & ~domain.str.contains(r"^[0-9]+(?:\.[0-9]+)?x\.")  # icon@2x.png, logo@1.5x.jpg
    )
    return parts.select(
        _result(pl.lit(""), pl.when(accepted).then((local + "@" + domain).str.to_lowercase()), pl.lit(""))
    )


# --------------------------------------------------------------------------------------------- ipv6

_NOT_HOST_IPV6 = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))
_HEX_GROUP = re.compile(r"[0-9A-Fa-f]{1,4}")


def _parse_ipv6(text: str) -> ipaddress.IPv6Address | None:
    if text.count(":") < 2:
        return None
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def _split_ipv6(body: str) -> tuple[str, str, str] | None:
    """(lead, canonical address, trail), or None: a label in front (`addr:fe80::1`), a port behind an
    unbracketed full form, a zone (`%eth0`) and trailing dots stay outside the token."""
    text = body.rstrip(".")
    trail = body[len(text):]
    if "%" in text:
        text, zone = text.split("%", 1)
        trail = "%" + zone + trail
    lead = ""
    address = _parse_ipv6(text)
    if address is None and ":" in text:
        label, remainder = text.split(":", 1)
        if _HEX_GROUP.fullmatch(label) is None:
            lead, text = label + ":", remainder
            address = _parse_ipv6(text)
    if address is None and not trail.startswith("%"):
        stem, _, port = text.rpartition(":")
        if port.isdigit():
            address = _parse_ipv6(stem)
            if address is not None:
                trail = ":" + port + trail
    if address is None or address in _NOT_HOST_IPV6:
        return None
    return lead, address.compressed, trail


def _decide_ipv6(candidates: pl.DataFrame) -> pl.DataFrame:
    # ipaddress does the validation and canonical form; bodies without two hex-ish groups are skipped early
    bodies = candidates.get_column("body").to_list()
    splits = [_split_ipv6(b) if re.search(r"[0-9A-Fa-f]:|:[0-9A-Fa-f]", b) else None for b in bodies]
    return pl.DataFrame(
        {
            "lead": [s[0] if s else "" for s in splits],
            "value": [s[1] if s else None for s in splits],
            "trail": [s[2] if s else "" for s in splits],
        },
        schema={"lead": pl.String, "value": pl.String, "trail": pl.String},
    )


# --------------------------------------------------------------------------------------------- ipv4

_VERSION_WORDS = frozenset(
    {"v", "ver", "version", "versions", "vsn", "release", "rel", "build", "firmware", "fw", "rev",
     "revision", "tag", "patch", "semver"}
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"


def _is_version_word(word: str) -> bool:
    words = _key_words(word)
    return bool(words) and words[-1] in _VERSION_WORDS


def _decide_ipv4(candidates: pl.DataFrame) -> pl.DataFrame:
    # A word, then a separator (quote, blank, `:` or `=`), or a word glued on without one; a glued word
    # cannot end with a digit, so that the address is always the whole dotted number.
    parts = _groups(
        candidates,
        r"(?s)^(?:(?P<word>[A-Za-z_][A-Za-z0-9_.~+-]*)(?P<sep>[\\\"' \t:=]+)"
        r"|(?P<glued>(?:[A-Za-z_](?:[A-Za-z0-9_.~+-]*[A-Za-z_.~+-])?)?))"
        r"(?P<address>[0-9]+(?:\.[0-9]+){3,})(?P<after>.*)$",
    ).with_columns(word=pl.coalesce("word", "glued"), sep=pl.col("sep").fill_null(""))
    word, sep, address = pl.col("word"), pl.col("sep"), pl.col("address")
    version_word = _accepted_by(parts.get_column("word"), _is_version_word)
    accepted = (
        (pl.col("after") == "")  # a suffix glued on: 1.2.3.4-rc1, 10.0.0.1ms
        & address.str.contains(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")  # 0-255, no leading zeros
        & ~address.str.starts_with("127.")  # loopback and unspecified identify no host
        & (address != "0.0.0.0")
        # glued to a word: v1.2.3.4, a.b.1.2.3.4, amd64~~6.1.1.0 (host-10.0.0.1 is an address)
        & ~((word != "") & (sep == "") & ~word.str.ends_with("-"))
        & ~pl.lit(version_word)  # version 1.2.3.4, "service.version": "1.2.3.4"
    )
    return parts.select(_result(word + sep, pl.when(accepted).then(address), pl.lit("")))


# --------------------------------------------------------------------------------------------- card


def _luhn_valid(digits: pl.Series) -> pl.Series:
    """Luhn check of digit strings (13-19 digits), vectorized: left-padded with zeros to 19 columns."""
    if digits.len() == 0:
        return pl.Series(dtype=pl.Boolean)
    padded = digits.str.pad_start(19, "0").str.join("").cast(pl.Binary)[0]
    matrix = (np.frombuffer(padded, dtype=np.uint8).reshape(-1, 19) - 48).astype(np.int64)
    doubled = matrix[:, 17::-2] * 2  # every second digit from the right, starting with the second
    matrix[:, 17::-2] = np.where(doubled > 9, doubled - 9, doubled)
    return pl.Series(matrix.sum(axis=1) % 10 == 0)


def _decide_card(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates,
        r"^(?P<number>[0-9]{13,19}|[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}(?:[ -][0-9]{4})?"
        r"|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})(?P<dots>\.*)$",
    ).with_columns(digits=pl.col("number").str.replace_all("[ -]", ""))
    digits = pl.col("digits")
    n = digits.str.len_chars()
    two, three, four = (digits.str.slice(0, k).cast(pl.Int32, strict=False) for k in (2, 3, 4))
    # issuer prefix and length of a card network: a Luhn-valid id that no network issues stays
    network = (
        pl.when(digits.str.starts_with("4")).then(n.is_in([13, 16, 19]))  # Visa
        .when(two.is_between(51, 55) | four.is_between(2221, 2720)).then(n == 16)  # Mastercard
        .when(two.is_in([34, 37])).then(n == 15)  # Amex
        .when(digits.str.starts_with("6011") | (two == 65) | three.is_between(644, 649))
        .then(n >= 16)  # Discover
        .when(four.is_between(3528, 3589)).then(n >= 16)  # JCB
        .when(three.is_between(300, 305) | two.is_in([36, 38, 39])).then(n >= 14)  # Diners Club
        .when(two == 62).then(n >= 16)  # UnionPay
        .when((two == 50) | two.is_between(56, 69)).then(pl.lit(True))  # Maestro
        .otherwise(pl.lit(False))
    )
    number = pl.col("number")
    shaped = (
        digits.is_not_null()
        & n.is_between(13, 19)
        & network.fill_null(False)
        & ~(number.str.contains(" ", literal=True) & number.str.contains("-", literal=True))
    )
    parts = parts.with_columns(shaped=shaped)
    luhn = pl.Series("luhn", [False] * parts.height)
    shaped_rows = parts.get_column("shaped").arg_true()
    if shaped_rows.len():
        luhn = luhn.scatter(shaped_rows, _luhn_valid(parts.get_column("digits").gather(shaped_rows)))
    return parts.with_columns(luhn).select(
        _result(pl.lit(""), pl.when(pl.col("shaped") & pl.col("luhn")).then(digits), pl.col("dots"))
    )


# -------------------------------------------------------------------------------------------- phone


def _decide_phone(candidates: pl.DataFrame) -> pl.DataFrame:
    parts = _groups(
        candidates,
        r"^(?P<international>\+[1-9][0-9]{8,14}"
        r"|\+[1-9][0-9]{0,2}[ .-]\(?[0-9]{1,4}\)?(?:[ .-][0-9]{2,8}){1,4})?"
        r"(?P<parenthesized>\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4})?"
        r"(?P<separated>[0-9]{3}[.-][0-9]{3}[.-][0-9]{4})?(?P<dots>\.*)$",
    )
    international, separated = pl.col("international"), pl.col("separated")
    national = pl.coalesce(pl.col("parenthesized"), separated)
    digits = pl.coalesce(international, national).str.replace_all("[^0-9]", "")
    n_formats = international.is_not_null().cast(pl.Int8) + national.is_not_null().cast(pl.Int8)
    nanp_ok = (
        ~digits.str.slice(0, 1).is_in(["0", "1"])  # area code
        & ~digits.str.slice(3, 1).is_in(["0", "1"])  # exchange: 100-200-3000 is an id
        & (separated.is_null() | (separated.str.slice(3, 1) == separated.str.slice(7, 1)))
    )
    value = (
        pl.when((n_formats == 1) & international.is_not_null() & digits.str.len_chars().is_between(9, 15))
        .then("+" + digits)
        .when((n_formats == 1) & national.is_not_null() & nanp_ok)
        .then(digits)
    )
    return parts.select(_result(pl.lit(""), value, pl.col("dots")))


# ------------------------------------------------------------------------------------------ families

# Every pattern starts with the token alternative, so text masked by an earlier kind is taken whole and
# kept; the rest of each pattern takes the word characters around a value so that a match always starts
# where a token would (see the module docstring).
_FAMILIES: tuple[_Family, ...] = (
    _Family(
        "jwt",
        prefilter=r"eyJ",
        pattern=TOKEN_PATTERN + "|" + _ESC + r"[A-Za-z0-9_-]*eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2,4}",
        decide=_decide_jwt,
    ),
    _Family(
        "bearer",
        prefilter=r"(?i)bearer|basic",
        pattern=TOKEN_PATTERN + "|" + _ESC + r"[A-Za-z]*(?i:bearer|basic)[ \t]+[A-Za-z0-9._~+/=-]+",
        decide=_decide_bearer,
    ),
    _Family(
        "api_key",
        prefilter=_API_KEY_PREFIXES,
        pattern=TOKEN_PATTERN + "|" + _ESC + r"[A-Za-z0-9_-]*(?:" + _API_KEY_PREFIXES + r")[A-Za-z0-9_.-]*",
        decide=_decide_api_key,
    ),
    _Family(
        "secret",
        prefilter=r"(?i)(?:pass|pwd|secret|token|key|credential)[A-Za-z0-9_.-]*\\?[\"']?[ \t]*[:=]",
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"[A-Za-z0-9_.-]*(?i:pass|pwd|secret|token|key|credential)[A-Za-z0-9_.-]*"
        + r"(?:\\?[\"'])?[ \t]*(?:=>|[:=])[ \t]*"
        + r"(?:\\\"(?:[^\"\\]|\\[^\"])*\\\"|\"(?:[^\"\\]|\\.)*\"|'[^'\\]*'|[^\s\"'\\,;&<>(){}\[\]]+)",
        decide=_decide_secret_value,
    ),
    _Family(
        "secret",
        prefilter=r"://[^\s/?#@]+:[^\s/?#@]+@",
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@\"'<>\\:]+:[^\s/?#@\"'<>\\]+@",
        decide=_decide_url_password,
    ),
    _Family(
        "email",
        prefilter=r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.",
        pattern=TOKEN_PATTERN + "|" + _ESC + r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
        decide=_decide_email,
    ),
    _Family(
        "ipv6",
        # literal scans: a compressed address has `::`, a full one at least six colons
        prefilter=lambda text: text.str.contains("::", literal=True)
        | (text.str.count_matches(":", literal=True) >= 6),
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"(?:[A-Za-z0-9_.%:]*::[A-Za-z0-9_.%:]*|[A-Za-z0-9_.%]*(?::[A-Za-z0-9_.%]*){6,})",
        decide=_decide_ipv6,
    ),
    _Family(
        "ipv4",
        prefilter=r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]",
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"(?:[A-Za-z_][A-Za-z0-9_.~+-]*(?:\\?[\"'])?[ \t]*[:=]?[ \t]*(?:\\?[\"'])?)?"
        + r"[0-9]+(?:\.[0-9]+){3,}"
        + r"(?:(?:-[A-Za-z_]|[+~][A-Za-z0-9_]|[A-Za-z_])[A-Za-z0-9_.+~-]*)?",
        decide=_decide_ipv4,
    ),
    _Family(
        "card",
        # cards start with 2-6; a digit run glued to a word or dot cannot be accepted, which keeps epoch
        # milliseconds and nanoseconds (they start with 1) and hex hashes out of the Python step
        prefilter=r"(?:^|[^0-9A-Za-z_.-]|\\[a-z]|\\u[0-9A-Fa-f]{4})[2-6][0-9]{3}[ -]?[0-9]{4}",
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"[A-Za-z0-9_.-]*(?:[0-9]{13,}|[0-9]{4}(?:[ -][0-9]{4}){2,3}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{5})"
        + r"[A-Za-z0-9_.-]*",
        decide=_decide_card,
    ),
    _Family(
        "phone",
        prefilter=r"\+[1-9][0-9]{0,2}[ .(-]*[0-9]|[0-9]{3}[.-][0-9]{3}[.-][0-9]{4}|\([0-9]{3}\)",
        pattern=TOKEN_PATTERN
        + "|"
        + _ESC
        + r"[A-Za-z0-9_.-]*(?:\+[0-9]{8,15}|\+[0-9]{1,3}[ .-]\(?[0-9]{1,4}\)?(?:[ .-][0-9]{2,8}){1,4}"
        + r"|\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}|[0-9]{3}[.-][0-9]{3}[.-][0-9]{4})[A-Za-z0-9_.-]*",
        decide=_decide_phone,
    ),
)



# ------------------------------------------------------------------------------------------- engine


def _split_escapes(matches: pl.Series) -> pl.DataFrame:
    """``esc`` (leading JSON escapes) and ``body`` of each match; the regex runs only where a backslash is."""
    frame = pl.DataFrame({"esc": pl.Series([""] * matches.len(), dtype=pl.String), "body": matches})
    escaped = matches.str.contains("\\", literal=True).fill_null(False).arg_true()
    if escaped.len():
        parts = matches.gather(escaped).str.extract_groups(_ESC_AND_BODY).struct.unnest()
        frame = frame.with_columns(
            frame.get_column("esc").scatter(escaped, parts.get_column("esc")),
            frame.get_column("body").scatter(escaped, parts.get_column("body")),
        )
    return frame


def _replacement_of(family: _Family, matches: pl.Series, tokenize: _Tokenizer) -> pl.Series:
    """The replacement of each candidate match (same length), null where the match stays as written.

    Repeated candidates (the same address in many rows) are decided once and joined back."""
    if matches.len() == 0:
        return pl.Series(dtype=pl.String)
    distinct = matches.unique()
    if distinct.len() * 2 < matches.len():
        decided = pl.DataFrame({"match": distinct, "replacement": _decide_each(family, distinct, tokenize)})
        return (
            matches.alias("match").to_frame()
            .join(decided, on="match", how="left", nulls_equal=True, maintain_order="left")
            .get_column("replacement")
        )
    return _decide_each(family, matches, tokenize)


def _decide_each(family: _Family, matches: pl.Series, tokenize: _Tokenizer) -> pl.Series:
    candidates = _split_escapes(matches)
    decided = candidates.hstack(family.decide(candidates.select("body")))
    # text masked by an earlier kind stays whole
    value = decided.select(
        pl.when(~pl.col("body").str.contains("^" + TOKEN_PATTERN + "$")).then(pl.col("value"))
    ).to_series()
    tokens = pl.Series(tokenize.many(family.kind, value.to_list()), dtype=pl.String)
    replacement = pl.col("esc") + pl.col("lead") + tokens + pl.col("trail")
    return decided.select(pl.when(replacement != matches).then(replacement)).to_series()


def _apply_family(
    values: pl.Series, family: _Family, tokenize: _Tokenizer
) -> tuple[pl.Series, int, pl.Series]:
    """Mask one family in a string Series: (masked series, values masked, positions of changed rows)."""
    no_change = (values, 0, pl.Series(dtype=pl.UInt32))
    has_candidate = values.to_frame("text").select(family.may_contain(pl.col("text"))).to_series()
    candidate_rows = has_candidate.fill_null(False).arg_true()
    if candidate_rows.len() == 0:
        return no_change
    texts = values.gather(candidate_rows)
    found = texts.str.extract_all(family.pattern)
    per_row = found.list.len().fill_null(0)
    changed_rows: list[pl.Series] = []
    rebuilt: list[pl.Series] = []
    masked_count = 0

    # One candidate in the row: decided where it stands. It occurs exactly once in the row (a second
    # occurrence would be a second candidate), so splitting the row at it and joining the two parts with
    # its replacement is exact and needs no automaton.
    single_rows = (per_row == 1).arg_true()
    if single_rows.len():
        match = found.gather(single_rows).list.first()
        replacement = _replacement_of(family, match, tokenize)
        changed = replacement.is_not_null()
        if changed.any():
            rows = single_rows.filter(changed)
            one = pl.DataFrame(
                {
                    "text": texts.gather(rows),
                    "match": match.filter(changed),
                    "replacement": replacement.filter(changed),
                }
            )
            split_at_match = pl.col("text").str.split(pl.col("match"))
            rebuilt.append(one.select(split_at_match.list.join(pl.col("replacement"))).to_series())
            changed_rows.append(rows)
            masked_count += rows.len()

    # Several candidates: decided once per distinct candidate, then Aho-Corasick over the candidates of
    # those rows, longest first, leftmost; the rejected ones map to themselves so that a value is never
    # replaced inside a bigger look-alike.
    multi_rows = (per_row > 1).arg_true()
    if multi_rows.len():
        occurrences = found.gather(multi_rows).explode(empty_as_null=True)
        distinct = occurrences.unique()
        replacement = _replacement_of(family, distinct, tokenize)
        changing = distinct.filter(replacement.is_not_null())
        if changing.len():
            mapping = dict(zip(changing.to_list(), replacement.drop_nulls().to_list(), strict=True))
            masked_count += int(occurrences.is_in(changing.implode()).sum())
            has_change = found.gather(multi_rows).list.eval(pl.element().is_in(changing.implode())).list.any()
            rows = multi_rows.filter(has_change)
            patterns = found.gather(rows).explode(empty_as_null=True).unique().to_list()
            patterns.sort(key=lambda p: (-len(p), p))
            replacements = [mapping.get(p, p) for p in patterns]
            rebuilt.append(texts.gather(rows).str.replace_many(patterns, replacements, leftmost=True))
            changed_rows.append(rows)

    if not changed_rows:
        return no_change
    positions = candidate_rows.gather(pl.concat(changed_rows))
    return values.clone().scatter(positions, pl.concat(rebuilt)), masked_count, positions


def _looks_like_json(text: str) -> bool:
    stripped = text.lstrip()
    return stripped[:1] in ("{", "[")


def _long_integers(value: object, found: set[int]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _long_integers(item, found)
    elif isinstance(value, list):
        for item in value:
            _long_integers(item, found)
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        found.add(value)


def _quote_integers(value: object, quoted: set[int]) -> object:
    if isinstance(value, dict):
        return {k: _quote_integers(v, quoted) for k, v in value.items()}
    if isinstance(value, list):
        return [_quote_integers(v, quoted) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and value in quoted:
        return str(value)
    return value


def _repair_json_numbers(
    before: pl.Series, after: pl.Series, changed_rows: pl.Series, family: _Family, tokenize: _Tokenizer
) -> pl.Series:
    """A card written as a bare JSON number would become an unquoted token: redo those few rows with the
    number quoted. Only rows that changed and look like JSON are checked, so this stays cheap."""
    repaired_rows: list[int] = []
    repaired_texts: list[str] = []
    for row in changed_rows.to_list():
        old, new = before[row], after[row]
        if not _looks_like_json(old):
            continue
        try:
            orjson.loads(new)
            continue
        except orjson.JSONDecodeError:
            pass
        try:
            document = json.loads(old)
        except ValueError:
            continue  # it was not valid JSON before masking either
        numbers: set[int] = set()
        _long_integers(document, numbers)
        candidates = sorted(numbers)
        texts = pl.Series([str(abs(n)) for n in candidates], dtype=pl.String)
        masked = _replacement_of(family, texts, tokenize)
        quoted = {n for n, r in zip(candidates, masked.to_list(), strict=True) if r is not None}
        text = json.dumps(_quote_integers(document, quoted), ensure_ascii=False, separators=(",", ":"))
        repaired, _, _ = _apply_family(pl.Series([text], dtype=pl.String), family, tokenize)
        repaired_rows.append(row)
        repaired_texts.append(repaired[0])
    if not repaired_rows:
        return after
    return after.scatter(repaired_rows, pl.Series(repaired_texts, dtype=pl.String))


def _mask_series(values: pl.Series, tokenize: _Tokenizer, counts: dict[str, int]) -> pl.Series:
    for family in _FAMILIES:
        before = values
        values, masked_count, changed_rows = _apply_family(values, family, tokenize)
        if masked_count and family.kind == "card":
            values = _repair_json_numbers(before, values, changed_rows, family, tokenize)
        counts[family.kind] += masked_count
    return values


def mask_columns(
    frame: pl.DataFrame, columns: Sequence[str], key: bytes
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Mask the named string columns; returns the masked frame and the number of values masked per kind.

    Null stays null; columns not named are untouched. The counts hold every kind in ``KINDS`` (zero when
    none was found) and add up over all the named columns.
    """
    tokenize = _Tokenizer(key)
    counts = dict.fromkeys(KINDS, 0)
    masked_columns = []
    for name in columns:
        if name not in frame.columns:
            raise ValueError(f"mask_columns: column {name!r} is not in the frame (columns: {frame.columns})")
        if frame.schema[name] != pl.String:
            raise ValueError(
                f"mask_columns: column {name!r} is {frame.schema[name]}, not text; mask text columns"
            )
        masked_columns.append(_mask_series(frame.get_column(name), tokenize, counts).alias(name))
    if not masked_columns:
        return frame, counts
    return frame.with_columns(masked_columns), counts


def mask_text(text: str, key: bytes) -> str:
    """Mask one value; the same result as ``mask_columns`` gives for that value in a column."""
    tokenize = _Tokenizer(key)  # checks the key even when there is nothing to mask
    frame = pl.DataFrame({"text": [text]}, schema={"text": pl.String})
    # One pass over all prefilters first: text with no candidate at all is returned as it is.
    if not frame.select(pl.any_horizontal([f.may_contain(pl.col("text")) for f in _FAMILIES])).item():
        return text
    counts = dict.fromkeys(KINDS, 0)
    return _mask_series(frame.get_column("text"), tokenize, counts)[0]

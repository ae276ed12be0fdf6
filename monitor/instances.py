"""The Redis instances one sidecar watches: `name=url,name=url`, each URL optionally ending in `#prefix=P`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from rqscope.monitor.errors import SettingsError

DEFAULT_NAME = "default"
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # it goes into URLs, labels and page titles as it is
RQ_PREFIX = re.compile(r"[A-Za-z0-9_.:{}-]+")  # the characters RQ itself allows in RQ_KEY_PREFIX
NAMED = re.compile(r"([^=/:,#]+)=(.*)", re.DOTALL)  # name=url; a bare URL's scheme has ':' before any '='
# entries are split only at a comma that a name= follows: a comma inside a URL's password stays in it
SEPARATOR = re.compile(r",(?=\s*[A-Za-z0-9_-]{1,64}\s*=)")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True)
class InstanceConfig:
    """One watched Redis: a URL (or a Sentinel master) and the RQ key prefix of the installation on it."""

    name: str
    url: str | None  # without its fragment; None when a Sentinel master names it
    prefix: str
    sentinel_master: str | None = None

    @property
    def cluster(self) -> bool:
        return self.url is not None and urlsplit(self.url).scheme in CLUSTER_SCHEMES


def _entries(variable: str, raw: str) -> list[tuple[str, str]]:
    """(name, value) pairs: one unnamed entry is `default`; several must all be named."""
    items = [item.strip() for item in SEPARATOR.split(raw) if item.strip()]
    if len(items) == 1 and not NAMED.fullmatch(items[0]):
        return [(DEFAULT_NAME, items[0])]
    pairs = []
    for item in items:
        match = NAMED.fullmatch(item)
        if match is None:
            raise SettingsError(f"{variable}: with several instances each must be name=value, not {_shown(item)}")
        name = match.group(1).strip()
        if not NAME.fullmatch(name):
            raise SettingsError(f"{variable}: instance name {name[:64]!r} must be 1-64 letters, digits, '_' or '-'")
        pairs.append((name, match.group(2).strip()))
    return pairs


def _shown(item: str) -> str:
    """An entry for an error line, without a password that may be in it."""
    parts = urlsplit(item)
    return repr(item[:64]) if parts.password is None else repr(item.replace(parts.password, "***")[:64])


def split_prefix(variable: str, name: str, value: str, default_prefix: str) -> tuple[str, str]:
    """(value without its fragment, the prefix it names or the default); a fragment other than prefix= is refused."""
    value, sep, prefix = value.rpartition("#prefix=")  # only this fragment: a '#' in a password is not one
    if not sep:
        value = prefix
    if "#" in value:  # told apart from a password's '#' only by guessing: neither is shown
        raise SettingsError(
            f"{variable}: instance {name!r} has a fragment other than #prefix=P (write a '#' in a password as %23)"
        )
    if not sep:
        return value, default_prefix
    prefix = unquote(prefix)
    if not RQ_PREFIX.fullmatch(prefix):
        raise SettingsError(
            f"{variable}: instance {name!r} has prefix {prefix[:64]!r}; "
            "RQ allows only letters, digits and _ . : - { }"
        )
    return value, prefix


def parse_instances(
    url_variable: str,
    raw_urls: str | None,
    master_variable: str,
    raw_masters: str | None,
    default_prefix: str,
    check_url: object,
) -> tuple[InstanceConfig, ...]:
    """Every instance, URLs first and then Sentinel masters, in the order given; names are unique.

    `check_url(variable, url)` validates one URL and raises SettingsError naming the variable.
    """
    found: list[InstanceConfig] = []
    for name, value in _entries(url_variable, raw_urls or ""):
        url, prefix = split_prefix(url_variable, name, value, default_prefix)
        check_url(f"{url_variable} ({name})", url)  # type: ignore[operator]
        found.append(InstanceConfig(name, url, prefix))
    for name, value in _entries(master_variable, raw_masters or ""):
        master, prefix = split_prefix(master_variable, name, value, default_prefix)
        if not master:
            raise SettingsError(f"{master_variable}: instance {name!r} names no master")
        found.append(InstanceConfig(name, None, prefix, sentinel_master=master))
    names = [instance.name.lower() for instance in found]  # `East` and `east` would be one label to a reader
    if twice := sorted({n for n in names if names.count(n) > 1}):
        also = f" (named by {url_variable} and {master_variable}: name each)" if raw_urls and raw_masters else ""
        raise SettingsError(f"{url_variable}: instance name {twice[0]!r} appears twice{also}")
    return tuple(found)


def by_prefix(
    variable: str, instances: tuple[InstanceConfig, ...], process_prefix: str, first_here: bool = True
) -> tuple[tuple[InstanceConfig, ...], dict[str, tuple[InstanceConfig, ...]]]:
    """(the instances under this process's RQ prefix, the others grouped by theirs, in the order given).

    RQ reads its prefix once per process, into its classes: the instances under another prefix are served by
    a process of their own (web.children), and the first, the default, by this one (unless not `first_here`).
    """
    if first_here and instances and instances[0].prefix != process_prefix:
        first = instances[0]
        raise SettingsError(
            f"{variable}: the first instance, {first.name!r}, has prefix {first.prefix!r} but this process's "
            f"RQ_KEY_PREFIX is {process_prefix!r}; start it with RQ_KEY_PREFIX={first.prefix}, or list an instance "
            f"under {process_prefix!r} first"
        )
    groups: dict[str, list[InstanceConfig]] = {}
    for instance in instances:
        if instance.prefix != process_prefix:
            groups.setdefault(instance.prefix, []).append(instance)
    local = tuple(i for i in instances if i.prefix == process_prefix)
    return local, {prefix: tuple(members) for prefix, members in groups.items()}


def group_values(instances: tuple[InstanceConfig, ...]) -> tuple[str | None, str | None]:
    """(the URL list, the Sentinel master list) naming just these instances, each with its prefix."""
    urls = [f"{i.name}={i.url}#prefix={i.prefix}" for i in instances if i.url is not None]
    masters = [f"{i.name}={i.sentinel_master}#prefix={i.prefix}" for i in instances if i.sentinel_master]
    return ",".join(urls) or None, ",".join(masters) or None

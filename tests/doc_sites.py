"""Documentation sites built at test time by real site generators from Markdown the tests write.

``build_site("mkdocs" | "sphinx", root)`` writes the Markdown sources of a small security
handbook into ``root/src`` and builds it into ``root/site`` with MkDocs (Material theme, with a
cookie consent banner, "edit this page" links, navigation tabs and a footer with prev/next) or
Sphinx (MyST Markdown, alabaster theme: sidebar, search box, "show source", footer). Nothing
third-party is committed: the generators come from the ``dev`` extra (pyproject.toml), and the
sites are built into a cache folder, once per generator version and source text.

The pages hold the traps that broke fidelity on real sites: headings whose generated ids hold
words that trafilatura's boilerplate filter drops ("Email", "Share", "Comments"), code blocks
inside list items, inline spans with triple backticks, admonitions, tables, Markdown escapes,
label headings ("Do", "Don't", "References", "See also").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

CHROME_MARKERS = (  # text that only the sites' chrome holds; none may reach a record
    "Fixture Handbook Home",  # the site name in nav bars and headers
    "FixtureCorp",  # footer copyright
    "We use cookies to measure",  # cookie banner
    "Edit this page",
    "Previous",
    "Next",
    "Made with",
    "Powered by",
    "Quick search",
    "Show Source",
    "Navigation",
    "Related Topics",
    "Table of contents",
)

_ADMONITION = {"mkdocs": '!!! warning "Keep the root keys offline"', "sphinx": "```{warning}"}


def _admonition(flavour: str) -> str:
    body = (
        "Store the organization's root credentials in a hardware token that is kept in a safe, and "
        "record every use of them in the audit log together with the ticket that justified it."
    )
    if flavour == "mkdocs":
        return f"{_ADMONITION['mkdocs']}\n\n    {body}\n\n"
    return f"```{{warning}}\n{body}\n```\n\n"


def pages(flavour: str) -> dict[str, str]:
    """Markdown sources (file name -> text) of the handbook, in the generator's own flavour."""
    secrets = """
        # Secrets Management

        Secrets are credentials that grant access to systems: database passwords, API tokens, signing
        keys and certificates. Every team that runs services in the cloud handles them, and most
        incidents that start with a leaked credential could have been stopped by a vault, short
        lifetimes and an audit trail that someone actually reads.

        ## Storage

        Keep secrets in a dedicated vault service rather than in configuration files or environment
        variables baked into images. The vault encrypts every value with a key that it never exports,
        and it records who read which secret and when. Applications authenticate to the vault with
        their workload identity, so no bootstrap password has to be shipped with the code.

        1. Create a vault namespace for each application team.
        2. Fetch the secret at start-up with the team's role:

            ```bash
            # Get the secret metadata
            vault kv metadata get secret/payments/db
            vault kv get -field=password secret/payments/db
            ```

        3. Keep the value in memory only, and never write it to a log or a temporary file.

        ## Rotation

        Rotate every secret on a schedule and immediately after a suspected leak. Short lifetimes limit
        what an attacker can do with a copied value, because the copy stops working before it can be
        used at scale. Dynamic secrets go further: the vault creates a fresh database user for each
        application instance and removes it when the lease ends.

        The helper names its options max\\_ttl and renew\\_increment; both accept durations such as
        `24h`. Write the fence characters as ```` ``` ```` when you quote them inside a sentence, and
        the command ```vault lease renew``` extends a lease that is about to expire.

        ### Do

        Rotate database credentials at least every thirty days, alert on any read of a secret outside
        the deployment window, and revoke the leases of an instance as soon as it is terminated.

        ### Don't

        Never paste a secret into a chat channel or a ticket, never commit one to a repository, and do
        not share one credential between two services that could be rotated independently.

        ## Email

        Alerts about secret access go to the security team's shared mailbox as well as to the paging
        system. The message names the secret path, the identity that read it and the source address,
        so that the on-call engineer can decide within minutes whether the read was expected.

        ## Share

        When a secret must be shared with a vendor, use a one-time link that expires after the first
        view instead of sending the value by mail. Record the transfer in the access register and
        rotate the secret once the vendor has finished the integration work.

        ## Comments

        Reviewers should comment on pull requests that add new secrets, asking which vault path holds
        the value, who owns its rotation and which alert fires when it is read unexpectedly.

        ADMONITION
        ## References

        - The vault's own operations guide describes the lease lifecycle in detail.
        - The incident playbook lists the steps to take after a credential leak.
    """
    network = """
        # Network Segmentation

        Network segmentation limits how far an intruder can move after compromising a single host.
        Each tier of an application lives in its own subnet, and traffic between tiers passes only
        through rules that name the source, the destination and the port explicitly.

        ## Tiers

        Place internet-facing load balancers in public subnets and keep application servers in
        private subnets that accept traffic only from the load balancer's security group. Databases
        belong in a separate tier that allows connections solely from the application tier on the
        database port, and administrative access goes through a bastion host with session recording.

        | Tier | Subnet | Inbound from | Port |
        |---|---|---|---|
        | Load balancer | Public | Internet | 443 |
        | Application | Private | Load balancer | 8443 |
        | Database | Isolated | Application | 5432 |

        ## Flow logs

        Turn on flow logs for every subnet and send them to a log archive account that the workload
        accounts cannot modify. Responders reconstruct lateral movement from these records, so keep
        them for at least a year and index the fields that investigations filter on most often.

        \\[!WARNING\\] Flow logs of busy subnets cost money: sample the accepted traffic of the
        load balancer tier, keep every rejected packet, and tag the archive bucket \\#network so that
        its costs show up under the network team in the monthly report.

        - Enable the logs with the command line:

            ```bash
            aws ec2 create-flow-logs --resource-type Subnet --resource-ids subnet-0abc --traffic-type ALL
            ```

        - Check the delivery status after an hour, and alert when delivery stops.

        ## See also

        - The identity guide explains how workloads authenticate across tiers.
        - The logging guide covers retention of the archive account.
    """
    index = """
        # Fixture Handbook

        This handbook collects the security practices that the platform team applies to every
        production account. Each chapter explains one area, gives the reasons behind each rule and
        shows the commands that put it into effect, so that new engineers can apply the rules
        without guessing what the authors meant.

        ## How to use this handbook

        Read the chapter about an area before you change it, and follow the checklists at the end
        of each chapter when you review someone else's change. When a rule does not fit your
        service, open an exception request that names the rule, the risk you accept and the date by
        which the exception ends; the security team reviews requests every week.
    """
    return {
        "index.md": textwrap.dedent(index).lstrip(),
        "secrets.md": textwrap.dedent(secrets).lstrip().replace("ADMONITION\n", _admonition(flavour)),
        "network.md": textwrap.dedent(network).lstrip(),
    }


MKDOCS_YML = """
site_name: Fixture Handbook Home
site_url: http://127.0.0.1/
repo_url: https://git.example.invalid/fixture/handbook
edit_uri: edit/main/docs/
copyright: Copyright 2026 FixtureCorp
theme:
  name: material
  features:
    - navigation.tabs
    - navigation.footer
    - content.action.edit
    - toc.follow
extra:
  consent:
    title: Cookie consent
    description: We use cookies to measure how the handbook is read and to improve it.
markdown_extensions:
  - admonition
  - tables
  - toc:
      permalink: true
  - pymdownx.superfences
  - pymdownx.highlight
nav:
  - Home: index.md
  - Secrets: secrets.md
  - Network: network.md
plugins: []
"""

SPHINX_CONF = """
project = "Fixture Handbook Home"
copyright = "2026, FixtureCorp"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
myst_heading_anchors = 3
html_theme = "alabaster"
html_show_sourcelink = True
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
"""


def generator_version(generator: str) -> str:
    if generator == "mkdocs":
        return f"mkdocs-{importlib.metadata.version('mkdocs')}-material-{importlib.metadata.version('mkdocs-material')}"
    return f"sphinx-{importlib.metadata.version('sphinx')}-myst-{importlib.metadata.version('myst-parser')}"


def cache_root() -> Path:
    return Path(os.environ.get("BASTION_CACHE") or Path.home() / ".cache" / "bastion") / "test-sites"


def build_site(generator: str, root: Path | None = None) -> tuple[Path, Path]:
    """``(markdown source folder, built HTML folder)`` of the handbook built with ``generator``.

    Built once per generator version and source text under the cache (or ``root``); a build is
    made aside and renamed into place, so a reader never sees half of one.
    """
    flavour = "mkdocs" if generator == "mkdocs" else "sphinx"
    sources = pages(flavour)
    config = MKDOCS_YML if generator == "mkdocs" else SPHINX_CONF
    key = hashlib.sha256(repr((sorted(sources.items()), config, generator_version(generator))).encode()).hexdigest()
    base = (root or cache_root()) / f"{generator}-{key[:16]}"
    if (base / "site").is_dir():
        return base / "src", base / "site"
    build = Path(str(base) + f".build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    docs = build / "src"
    docs.mkdir(parents=True)
    for name, text in sources.items():
        (docs / name).write_text(text, encoding="utf-8")
    bindir = Path(sys.executable).parent
    if generator == "mkdocs":
        (build / "mkdocs.yml").write_text(MKDOCS_YML.replace("plugins: []", "docs_dir: src\nplugins: []"))
        cmd = [str(bindir / "mkdocs"), "build", "--quiet", "-f", str(build / "mkdocs.yml"), "-d", str(build / "site")]
    else:
        (docs / "conf.py").write_text(SPHINX_CONF)
        (docs / "index.md").write_text(
            sources["index.md"] + "\n```{toctree}\n:hidden:\nsecrets\nnetwork\n```\n", encoding="utf-8"
        )
        cmd = [str(bindir / "sphinx-build"), "-q", "-b", "html", str(docs), str(build / "site")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{generator} build failed: {done.stderr[-2000:]}")
    if generator == "sphinx":  # the reference is the Markdown as written, without the toctree
        (docs / "index.md").write_text(sources["index.md"], encoding="utf-8")
        (docs / "conf.py").unlink()
    try:
        build.rename(base)
    except OSError:  # another process built it first
        shutil.rmtree(build, ignore_errors=True)
    return base / "src", base / "site"

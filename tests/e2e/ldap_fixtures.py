"""ldap_fixtures - a real slapd on loopback for the directory sync tests
(/work/shared/PEERS.md section 3).

`Slapd` writes slapd.conf (core, cosine, inetorgperson and moat-ad.schema,
whose proxyAddresses has an EQUALITY rule), loads generated users and
groups with slapadd into a back_mdb database in a private directory under
/tmp, and starts slapd in the foreground on ldap:// and ldaps:// ports of
127.0.0.1 with a certificate from the test CA.  The sync account
cn=sync,ou=service,dc=example,dc=com is an ordinary bind DN with a size
limit below the number of users (size.prtotal=unlimited lets paged searches
read everything); the rootdn makes run-time changes with ldapmodify.

Standard library only.  Every slapd started is stopped at teardown
(SIGTERM, then SIGKILL), and its directory removed.
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BASE = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PW = "secret"
SYNC_DN = f"cn=sync,ou=service,{BASE}"
SYNC_PW = "sync-password-1"

# AD's attribute OIDs (PEERS.md 3); mailAlternativeAddress for the OpenLDAP
# preset gets an experimental OID of its own
SCHEMA = """\
attributetype ( 1.2.840.113556.1.2.210 NAME 'proxyAddresses' EQUALITY caseIgnoreMatch
  SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName' EQUALITY caseIgnoreMatch
  SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.4203.666.100.2 NAME 'mailAlternativeAddress' EQUALITY caseIgnoreIA5Match
  SUBSTR caseIgnoreIA5SubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )
objectclass ( 1.3.6.1.4.1.4203.666.100.1 NAME 'moatADUser' SUP top AUXILIARY
  MAY ( proxyAddresses $ userPrincipalName $ mailAlternativeAddress ) )
"""


from moatlib import free_port  # noqa: E402,F401  (one allocator for every fixture)


def user_entry(i, domain="example.com", groups=()):
    """One AD-like user: SMTP: primary, two smtp: aliases, an X500: address
    (ignored by the sync), a UPN under another domain."""
    return (f"dn: uid=user{i},ou=people,{BASE}\n"
            "objectClass: inetOrgPerson\nobjectClass: moatADUser\n"
            f"uid: user{i}\ncn: User {i}\nsn: U{i}\ndisplayName: User Number {i}\n"
            f"mail: user{i}@{domain}\n"
            f"proxyAddresses: SMTP:user{i}@{domain}\n"
            f"proxyAddresses: smtp:u{i}@{domain}\n"
            f"proxyAddresses: smtp:User.{i}@{domain.upper()}\n"
            f"proxyAddresses: X500:/o=Example/ou=Exchange/cn=Recipients/cn=user{i}\n"
            f"mailAlternativeAddress: alt{i}@{domain}\n"
            f"userPrincipalName: user{i}@corp.example.internal\n\n")


def group_entry(k, members, domain="example.com"):
    lines = [f"dn: cn=group{k},ou=groups,{BASE}", "objectClass: groupOfNames",
             "objectClass: extensibleObject", f"cn: group{k}", f"mail: group{k}@{domain}",
             f"proxyAddresses: SMTP:group{k}@{domain}", f"proxyAddresses: smtp:g{k}@{domain}"]
    lines += [f"member: uid=user{i},ou=people,{BASE}" for i in members]
    if not members:
        lines.append(f"member: {ROOT_DN}")     # groupOfNames needs one member
    return "\n".join(lines) + "\n\n"


def directory_ldif(n_users, n_groups=3, extra=""):
    """The base entries, n_users users, n_groups groups (group k has every
    (k+2)-th user among the first 1000), and extra LDIF text."""
    parts = [f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n"
             "o: Example\n\n",
             f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n",
             f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n",
             f"dn: ou=service,{BASE}\nobjectClass: organizationalUnit\nou: service\n\n",
             f"dn: {SYNC_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
             f"cn: sync\nuserPassword: {SYNC_PW}\n\n"]
    parts += [user_entry(i) for i in range(1, n_users + 1)]
    for k in range(1, n_groups + 1):
        parts.append(group_entry(k, list(range(1, min(n_users, 1000) + 1, k + 2))))
    parts.append(extra)
    return "".join(parts)


class Slapd:
    def __init__(self, ca, ldif, size_limit=5):
        self.dir = Path(tempfile.mkdtemp(prefix="/tmp/i5f-slapd-"))
        self.ca = ca
        self.port = free_port()
        self.tls_port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{self.tls_port}"
        self.proc = None
        d = self.dir
        (d / "db").mkdir()
        (d / "moat-ad.schema").write_text(SCHEMA)
        for name in ("ca.crt", "server.key"):
            shutil.copy(ca.dir / name, d / name)
        shutil.copy(ca.dir / "server.crt", d / "server.crt")
        (d / "slapd.conf").write_text(f"""\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {d}/moat-ad.schema
pidfile {d}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.crt
TLSCertificateFile {d}/server.crt
TLSCertificateKeyFile {d}/server.key
access to dn.base="" by * read
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
sizelimit {size_limit}
database mdb
maxsize 4294967296
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PW}
directory {d}/db
index objectClass eq
index mail,proxyAddresses eq,sub
limits dn.exact="{SYNC_DN}" size.soft={size_limit} size.hard={size_limit} size.prtotal=unlimited
""")
        (d / "data.ldif").write_text(ldif)
        conf = str(d / "slapd.conf")
        r = subprocess.run(["slaptest", "-f", conf, "-u"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(["slapadd", "-q", "-f", conf, "-l", str(d / "data.ldif")],
                           capture_output=True, text=True, timeout=1200)
        assert r.returncode == 0, r.stderr
        (d / "data.ldif").unlink()

    def start(self):
        self.proc = subprocess.Popen(
            ["slapd", "-f", str(self.dir / "slapd.conf"), "-h",
             f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/", "-d", "0"],
            stdout=subprocess.DEVNULL, stderr=open(self.dir / "slapd.log", "wb"))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("slapd exited: " +
                                     (self.dir / "slapd.log").read_text(errors="replace"))
            r = subprocess.run(["ldapsearch", "-x", "-H", self.url, "-s", "base", "-b", "",
                                "namingContexts"], capture_output=True, text=True, timeout=10)
            if r.returncode == 0 and "namingContexts" in r.stdout:
                return self
            time.sleep(0.1)
        raise AssertionError("slapd did not come up")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def modify(self, ldif):
        """Run-time change as the rootdn (changetype records)."""
        r = subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW],
                           input=ldif, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return r

    def delete(self, *dns):
        r = subprocess.run(["ldapdelete", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW,
                            *dns], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr

    def search_as_sync(self, *args):
        return subprocess.run(["ldapsearch", "-x", "-H", self.url, "-D", SYNC_DN, "-w", SYNC_PW,
                               "-b", BASE, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def ldap_ca():
    from connect_fixtures import CertAuthority
    d = Path(tempfile.mkdtemp(prefix="/tmp/i5f-ca-"))
    d.chmod(0o755)
    try:
        yield CertAuthority(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def slapd(ldap_ca):
    """Factory: slapd(n_users, n_groups=3, size_limit=5, extra="") -> a started Slapd."""
    made = []

    def factory(n_users, n_groups=3, size_limit=5, extra=""):
        s = Slapd(ldap_ca, directory_ldif(n_users, n_groups, extra), size_limit)
        made.append(s)
        return s.start()

    yield factory
    for s in made:
        s.cleanup()

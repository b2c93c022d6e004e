"""dkim_verifier.py - an independent DKIM verifier for the e2e tests.

Written from RFC 6376 (relaxed canonicalisation, sections 3.4.2 and 3.4.4;
the signing and verifying algorithms, sections 3.7 and 6.1.3) and RFC 8463
(ed25519-sha256), with the standard library for parsing and hashing and the
openssl command line for the public-key step.  It shares no code with Moat
or libopendkim, so a signature it accepts was made right.

verify(message_bytes, dns_txt_value) -> (True, "ok") or (False, "why").
"""
import base64
import hashlib
import os
import re
import subprocess
import tempfile

# the DER prefix that turns a raw 32-byte Ed25519 key into SubjectPublicKeyInfo
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def parse_tags(text):
    """tag=value; list (RFC 6376 3.2) -> dict; whitespace around tags dropped"""
    tags = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError("tag without '=': %r" % part)
        tags[name.strip()] = value.strip()
    return tags


def split_message(msg):
    """(list of raw header fields incl. folding, without the final CRLF; body)"""
    end = msg.find(b"\r\n\r\n")
    if end < 0:
        head, body = msg, b""
    else:
        head, body = msg[:end + 2], msg[end + 4:]
    fields = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, body


def relaxed_header(field):
    """RFC 6376 3.4.2"""
    name, _, value = field.partition(b":")
    value = value.replace(b"\r\n", b"")
    value = re.sub(rb"[ \t]+", b" ", value).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value


def relaxed_body(body):
    """RFC 6376 3.4.4"""
    lines = body.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in lines]
    while out and out[-1] == b"":
        out.pop()
    return b"".join(line + b"\r\n" for line in out)


def public_key_der(dns_txt):
    tags = parse_tags(dns_txt)
    if tags.get("v", "DKIM1") != "DKIM1":
        raise ValueError("v= is not DKIM1")
    k = tags.get("k", "rsa")
    raw = base64.b64decode(re.sub(r"\s+", "", tags["p"]))
    if k == "ed25519":
        if len(raw) != 32:
            raise ValueError("an ed25519 p= must be 32 octets")
        return k, ED25519_SPKI_PREFIX + raw
    return k, raw


def openssl_verify(k, der, data, sig):
    with tempfile.TemporaryDirectory() as tmp:
        pub = os.path.join(tmp, "pub.der")
        dat = os.path.join(tmp, "data")
        sgf = os.path.join(tmp, "sig")
        with open(pub, "wb") as f:
            f.write(der)
        with open(sgf, "wb") as f:
            f.write(sig)
        if k == "ed25519":
            # RFC 8463 3: Ed25519 over the SHA-256 hash of the signed data
            with open(dat, "wb") as f:
                f.write(hashlib.sha256(data).digest())
            cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-keyform", "DER",
                   "-inkey", pub, "-rawin", "-in", dat, "-sigfile", sgf]
        else:
            with open(dat, "wb") as f:
                f.write(data)
            cmd = ["openssl", "dgst", "-sha256", "-keyform", "DER", "-verify", pub,
                   "-signature", sgf, dat]
        r = subprocess.run(cmd, capture_output=True)
        return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace").strip()


def verify(msg, dns_txt, index=0):
    """verify the index-th DKIM-Signature of msg (bytes, CRLF) with the key in dns_txt"""
    fields, body = split_message(msg)
    sigs = [f for f in fields if f.split(b":", 1)[0].strip().lower() == b"dkim-signature"]
    if len(sigs) <= index:
        return False, "no DKIM-Signature"
    sigfield = sigs[index]
    tags = parse_tags(sigfield.partition(b":")[2].replace(b"\r\n", b"").decode())
    if tags.get("v") != "1":
        return False, "v= is not 1"
    if tags.get("c", "simple/simple") != "relaxed/relaxed":
        return False, "this verifier handles c=relaxed/relaxed only, got %s" % tags.get("c")
    k, der = public_key_der(dns_txt)
    want_a = {"rsa": "rsa-sha256", "ed25519": "ed25519-sha256"}[k]
    if tags.get("a") != want_a:
        return False, "a=%s does not fit k=%s" % (tags.get("a"), k)
    # body hash (RFC 6376 3.7)
    cbody = relaxed_body(body)
    if "l" in tags:
        cbody = cbody[:int(tags["l"])]
    bh = base64.b64encode(hashlib.sha256(cbody).digest()).decode()
    if bh != re.sub(r"\s+", "", tags["bh"]):
        return False, "body hash mismatch"
    # header hash: h= names, each taking the last unused instance (RFC 6376 5.4.2)
    used = set()
    data = b""
    for name in [n.strip().lower() for n in tags["h"].split(":")]:
        for i in range(len(fields) - 1, -1, -1):
            fname = fields[i].split(b":", 1)[0].strip().lower().decode()
            if i not in used and fname == name and fields[i] is not sigfield:
                used.add(i)
                data += relaxed_header(fields[i]) + b"\r\n"
                break
    # the signature field itself, b= emptied, no CRLF (RFC 6376 3.7)
    unsigned = re.sub(rb"(\bb[ \t\r\n]*=)[^;]*", rb"\1", sigfield, count=1)
    data += relaxed_header(unsigned)
    sig = base64.b64decode(re.sub(r"\s+", "", tags["b"]))
    ok, out = openssl_verify(k, der, data, sig)
    return (True, "ok") if ok else (False, "signature does not verify: " + out)

#!/usr/bin/python3
"""make_samples.py - writes the sample messages of this folder (CRLF line
ends, as they arrive over SMTP): an original message, the Exchange envelope
journal report that carries it (7bit and base64-encoded), a report whose
original part is missing, and a plain BCC-style journal copy.  Used by
tests/unit/test_archive_journal.c and test_archive_mime.c; rerun after an
edit and commit the .eml files."""
import base64
import os

os.chdir(os.path.dirname(os.path.abspath(__file__)))


def crlf(s):
    return s.replace('\n', '\r\n').encode()


ORIGINAL = """Received: from mail.contoso.example ([192.0.2.10]) by exch1.contoso.example
 with Microsoft SMTP Server; Sat, 28 Nov 2026 09:15:02 +0000
From: Alice Archer <Alice@Contoso.example>
To: Bob Baker <bob@contoso.example>, Sales <sales@contoso.example>
Cc: carol@fabrikam.example
Subject: Quarterly figures =?utf-8?q?f=C3=BCr?= Q3
Date: Sat, 28 Nov 2026 09:15:00 +0000
Message-ID: <orig-1@contoso.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="_001_orig_"

--_001_orig_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

The Q3 figures are attached. Revenue grew by 12 percent in M=C3=BCnchen.

--_001_orig_
Content-Type: application/pdf; name="q3-figures.pdf"
Content-Disposition: attachment; filename="q3-figures.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcTl8uXrCjEgMCBvYmoKPDwvVHlwZS9DYXRhbG9nPj4KZW5kb2JqCg==

--_001_orig_--
"""

ENVELOPE = """Sender: alice@contoso.example
Subject: Quarterly figures f\u00fcr Q3
Message-Id: <orig-1@contoso.example>
To: bob@contoso.example
To: erin@contoso.example, Expanded: sales@contoso.example
Cc: carol@fabrikam.example
Cc: frank@contoso.example, Forwarded: grace@contoso.example
Bcc: dave@contoso.example
Recipient: heidi@fabrikam.example
"""


def report(orig_part):
    return """Received: from exch1.contoso.example (192.0.2.10) by moat.contoso.example
 with ESMTPS; Sat, 28 Nov 2026 09:15:03 +0000
From: Microsoft Exchange <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.example>
To: journal@journal.contoso.example
Subject: Quarterly figures =?utf-8?q?f=C3=BCr?= Q3
Date: Sat, 28 Nov 2026 09:15:03 +0000
Message-ID: <journal-7f3a@exch1.contoso.example>
Content-Type: multipart/mixed;
\tboundary="_000_JournalReport_7f3a_"
MIME-Version: 1.0
X-MS-Journal-Report:
X-MS-Exchange-Organization-Processed-By-Journaling: Journal Agent

--_000_JournalReport_7f3a_
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit

""" + ENVELOPE + """
--_000_JournalReport_7f3a_
""" + orig_part + """
--_000_JournalReport_7f3a_--
"""


def main():
    open('original.eml', 'wb').write(crlf(ORIGINAL))
    open('exchange_report.eml', 'wb').write(crlf(report(
        'Content-Type: message/rfc822\nContent-Disposition: attachment\n\n' + ORIGINAL)))
    b64 = base64.encodebytes(crlf(ORIGINAL)).decode()
    open('exchange_report_base64.eml', 'wb').write(crlf(report(
        'Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n'
        'Content-Disposition: attachment\n\n' + b64)))
    open('exchange_report_no_original.eml', 'wb').write(crlf(report(
        'Content-Type: application/ms-tnef; name="winmail.dat"\n'
        'Content-Transfer-Encoding: base64\n\neJ8+IgAAAA==\n')))
    bcc = ORIGINAL.replace(
        'Received: from mail', 'Received: from exch1.contoso.example by moat.contoso.example;'
        ' Sat, 28 Nov 2026 09:15:04 +0000\nReceived: from mail', 1)
    open('journal_bcc_copy.eml', 'wb').write(crlf(bcc))


main()

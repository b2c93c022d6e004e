/*
 * fuzz_dns_tlsa.c - libFuzzer target for the TLSA rdata parser
 * (dns_tlsa_parse in src/dns/dns.c), which reads what a DNS server sends
 * for _port._tcp.<mx host>.  Invariants: short or over-long rdata is
 * refused; accepted rdata keeps its fields and data exactly, the data
 * length within DNS_TLSA_MAX_DATA, the log text bounded; the usability
 * check (dane_tlsa_usable) agrees with the length rules of RFC 6698.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dns/dns.h"
#include "deliver/deliver_dane.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dns_record rr;
    int rc = dns_tlsa_parse(data, size, &rr);
    if (size < 4 || size - 3 > DNS_TLSA_MAX_DATA) {
        if (rc != -1)
            abort();
        return 0;
    }
    if (rc != 0 || rr.usage != data[0] || rr.selector != data[1] || rr.mtype != data[2] ||
        rr.data_len != size - 3 || memcmp(rr.data, data + 3, rr.data_len) != 0)
        abort();
    if (!rr.text || strlen(rr.text) > 16 + 2 * 64 + 3)
        abort();
    struct dane_tlsa t = { .usage = rr.usage, .selector = rr.selector, .mtype = rr.mtype,
                           .len = rr.data_len, .data = rr.data };
    if (dane_tlsa_usable(&t) &&
        ((t.usage != 2 && t.usage != 3) || t.selector > 1 || t.mtype > 2 ||
         (t.mtype == 1 && t.len != 32) || (t.mtype == 2 && t.len != 64)))
        abort();
    dns_record_clear(&rr);
    return 0;
}

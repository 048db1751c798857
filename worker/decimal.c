/*
 * decimal.c - see decimal.h. Amounts are compared as digit strings: the integer
 * parts by length (leading zeros skipped) then digit by digit, then the
 * decimals padded with zeros to four places.
 */
#include "decimal.h"

#include <stdio.h>
#include <string.h>

#define DEC_INT_DIGITS 14
#define DEC_SCALE 4

int dec_check(const char *s, char *why, size_t whylen)
{
    size_t ints = strspn(s, "0123456789"), decs = 0;
    const char *p = s + ints;

    if (*p == '.') {
        decs = strspn(p + 1, "0123456789");
        if (decs == 0) {
            snprintf(why, whylen, "a '.' must be followed by digits");
            return -1;
        }
        p += 1 + decs;
    }
    if (ints == 0 || *p) {
        snprintf(why, whylen, "must be a decimal number such as 25 or 25.50 (digits, "
                              "an optional '.' and decimals; no sign or exponent)");
        return -1;
    }
    if (decs > DEC_SCALE) {
        snprintf(why, whylen, "has more than %d decimals", DEC_SCALE);
        return -1;
    }
    while (ints > 1 && *s == '0')
        s++, ints--;
    if (ints > DEC_INT_DIGITS) {
        snprintf(why, whylen, "has more than %d digits before the '.'", DEC_INT_DIGITS);
        return -1;
    }
    if (strspn(s, "0.") == strlen(s)) {
        snprintf(why, whylen, "must be more than zero");
        return -1;
    }
    return 0;
}

static const char *dec_skip_zeros(const char *s)
{
    while (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
        s++;
    return s;
}

int dec_cmp(const char *a, const char *b)
{
    a = dec_skip_zeros(a);
    b = dec_skip_zeros(b);
    size_t la = strspn(a, "0123456789"), lb = strspn(b, "0123456789");
    if (la != lb)
        return la < lb ? -1 : 1;
    int c = strncmp(a, b, la);
    if (c)
        return c;
    a += la + (a[la] == '.');
    b += lb + (b[lb] == '.');
    for (int i = 0; i < DEC_SCALE; i++) {
        char x = *a ? *a++ : '0', y = *b ? *b++ : '0';
        if (x != y)
            return x < y ? -1 : 1;
    }
    return 0;
}

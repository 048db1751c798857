/*
 * decimal.h - money amounts as text, checked without ever becoming a float.
 *
 * An amount is what PostgreSQL's numeric(18,4) holds: up to 14 integer digits and
 * up to 4 decimals, written "123", "123.4" or "0.0001" (no sign, exponent, spaces
 * or leading '+'). The text goes to PostgreSQL as a parameter; these functions
 * only say whether it is acceptable and how two amounts compare.
 */
#ifndef STELLER_DECIMAL_H
#define STELLER_DECIMAL_H

#include <stddef.h>

/* 0 when s is a well-formed amount above zero, else -1 with the reason in why. */
int dec_check(const char *s, char *why, size_t whylen);

/* Compares two well-formed amounts: <0, 0, >0. */
int dec_cmp(const char *a, const char *b);

#endif

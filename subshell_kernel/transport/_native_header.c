/* The header check: is a request's header a flat JSON object of ASCII strings, with
 * one "msg_id" and one "msg_type", and no "subshell_id"?  Only such a header of a
 * kernel_info_request is answered in C; anything else, JSON or not, goes to Python.
 * Tested against json (tests/test_native_control.py). */

#include "_native.h"

#include <string.h>

static int is_ws(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int is_hex(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A JSON string at s[*i] (its opening quote): ASCII only.  Sets *start and *len to its
 * raw text between the quotes and *escaped if it holds an escape.  0 if not such a string. */
static int scan_string(const unsigned char *s, size_t n, size_t *i, size_t *start,
                       size_t *len, int *escaped) {
    if (*i >= n || s[*i] != '"') return 0;
    size_t j = *i + 1;
    *start = j;
    *escaped = 0;
    while (j < n) {
        unsigned char c = s[j];
        if (c == '"') {
            *len = j - *start;
            *i = j + 1;
            return 1;
        }
        if (c < 0x20 || c >= 0x80) return 0;
        if (c == '\\') {
            *escaped = 1;
            if (j + 1 >= n) return 0;
            unsigned char e = s[j + 1];
            if (e == 'u') {
                if (j + 5 >= n) return 0;
                for (int k = 2; k < 6; k++)
                    if (!is_hex(s[j + k])) return 0;
                j += 6;
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0) return 0;
            j += 2;
            continue;
        }
        j++;
    }
    return 0;
}

static int raw_equals(const unsigned char *s, size_t start, size_t len, const char *text) {
    return len == strlen(text) && memcmp(s + start, text, len) == 0;
}

int skn_classify_header(const unsigned char *s, size_t n) {
    size_t i = 0, start, len, vstart, vlen;
    int escaped, vescaped, msg_types = 0, msg_ids = 0, kernel_info = 0;
    while (i < n && is_ws(s[i])) i++;
    if (i >= n || s[i] != '{') return NOT_SURE;
    i++;
    while (1) {
        while (i < n && is_ws(s[i])) i++;
        if (!scan_string(s, n, &i, &start, &len, &escaped) || escaped) return NOT_SURE;
        while (i < n && is_ws(s[i])) i++;
        if (i >= n || s[i] != ':') return NOT_SURE;
        i++;
        while (i < n && is_ws(s[i])) i++;
        if (!scan_string(s, n, &i, &vstart, &vlen, &vescaped)) return NOT_SURE;
        if (raw_equals(s, start, len, "msg_type")) {
            msg_types++;
            if (vescaped) return NOT_SURE;
            kernel_info = raw_equals(s, vstart, vlen, "kernel_info_request");
        } else if (raw_equals(s, start, len, "msg_id")) {
            msg_ids++;
        } else if (raw_equals(s, start, len, "subshell_id")) {
            return NOT_SURE;
        }
        while (i < n && is_ws(s[i])) i++;
        if (i < n && s[i] == ',') { i++; continue; }
        if (i < n && s[i] == '}') { i++; break; }
        return NOT_SURE;
    }
    while (i < n && is_ws(s[i])) i++;
    if (i != n || msg_types != 1 || msg_ids != 1) return NOT_SURE;
    return kernel_info ? KERNEL_INFO : OTHER_TYPE;
}

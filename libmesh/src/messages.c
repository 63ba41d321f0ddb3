/*
 * Formatting into fixed buffers and the messages libmesh prints: warnings,
 * fatal errors and failed assertions.  Nothing here may call malloc (a
 * message may be printed from inside it).
 */
#include "internal.h"

void mesh_buf_str(mesh_buf_t *b, const char *s)
{
    while (*s && b->len + 1 < b->cap)
        b->p[b->len++] = *s++;
    b->p[b->len] = 0;
}

void mesh_buf_u64(mesh_buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && b->len + 1 < b->cap)
        b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

void mesh_buf_hex(mesh_buf_t *b, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    mesh_buf_str(b, "0x");
    while (n && b->len + 1 < b->cap)
        b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

void mesh_buf_fixed1(mesh_buf_t *b, uint64_t num, uint64_t den)
{
    uint64_t tenths = den ? (num * 10 + den / 2) / den : 0;
    mesh_buf_u64(b, tenths / 10);
    mesh_buf_str(b, ".");
    mesh_buf_u64(b, tenths % 10);
}

void mesh_warn(const char *msg)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: ");
    mesh_buf_str(&b, msg);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
}

/* "mesh: <what> (errno N)<then>" on stderr, then abort. */
void mesh_fatal_errno(const char *what, int err, const char *then)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, what);
    mesh_buf_str(&b, " (errno ");
    mesh_buf_u64(&b, (uint64_t)err);
    mesh_buf_str(&b, ")");
    mesh_buf_str(&b, then);
    mesh_warn(buf);
    mesh_os_abort();
}

void mesh_fatal_ptr(const char *what, const void *p)
{
    char buf[256];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: ");
    mesh_buf_str(&b, what);
    mesh_buf_str(&b, " ");
    mesh_buf_hex(&b, (uint64_t)(uintptr_t)p);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
    mesh_os_abort();
}

void mesh_assert_fail(const char *expr, const char *file, int line)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: assertion failed: ");
    mesh_buf_str(&b, expr);
    mesh_buf_str(&b, " at ");
    mesh_buf_str(&b, file);
    mesh_buf_str(&b, ":");
    mesh_buf_u64(&b, (uint64_t)line);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
    mesh_os_abort();
}

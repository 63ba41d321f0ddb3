/*
 * libmesh: a malloc(3) replacement that compacts fragmented memory without
 * moving objects (meshing, PLDI 2019).  The malloc family is replaced by
 * linking libmesh.a or preloading libmesh.so; this header declares only
 * what libmesh adds.
 */
#ifndef MESH_H
#define MESH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MESH_VERSION "0.1.0"

/*
 * Reads or writes a control or statistic by name, in the style of
 * jemalloc's mallctl: the current value is copied to oldp (when oldp and
 * oldlenp are not NULL; *oldlenp must be the value's size), a new value is
 * taken from newp/newlen.  Returns 0, or ENOENT for an unknown name, EINVAL
 * for a wrong size, EPERM for writing a read-only name.
 *
 *   stats.allocated     uint64  bytes in live objects
 *   stats.active        uint64  bytes of spans holding live objects (less
 *                               meshed-away spans; trimmed pages still count)
 *   stats.resident      uint64  physical bytes of the arena file (+ huge objects)
 *   stats.mapped        uint64  bytes of address space handed out
 *   stats.meshed_bytes  uint64  bytes currently saved by meshing
 *   stats.mesh_count    uint64  meshes performed
 *   mesh.compact        uint64  (read) mesh now, pass after pass until one
 *                               finds nothing, then trim; returns the spans
 *                               meshed
 *   mesh.check_period   uint64  (read) if MESH_PERIOD_MS has gone by since
 *                               the last time, do the periodic work now (give
 *                               back freed pages, mesh); returns 1 if it did
 *   mesh.scavenge       uint64  (read) give freed pages back to the OS now
 *                               (free spans, and the unused pages of partial
 *                               spans), returning the bytes released
 */
int mesh_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen);

/*
 * Defragmentation by moving, for programs that can relocate their own
 * objects (update every pointer to one): meshing cannot merge spans that
 * hold many small objects, moving them can.  For each object it could
 * move, the program asks mesh_defrag_hint; when the answer is 1 it
 * allocates the copy with mesh_defrag_malloc, copies, and frees the old
 * object.  The statistics a defragmenter needs to decide when to run are
 * mesh_mallctl's stats.allocated, stats.active and stats.resident
 * (fragmentation = active / allocated).
 *
 * mesh_defrag_hint(p): 1 if p is a live small object whose span is
 * detached (no thread allocates from it), partial, and is one to drain:
 * its class's live objects fit in K = ceil(live / objects per span) spans,
 * and this span holds fewer live objects than the K-th fullest; 0
 * otherwise: objects in full or kept spans, in spans a thread has
 * attached, large objects, and pointers libmesh did not return.  The
 * thresholds hold still while objects move, so one scan drains a span
 * completely; they are refreshed at most every 100 ms, so a hint costs a
 * page-table lookup and a popcount.
 *
 * mesh_defrag_malloc(size): like malloc, but a small object goes into the
 * fullest kept partial span of its class rather than the calling thread's
 * current span, so that moved objects fill dense spans while sparse ones
 * drain; with no partial span, or for a large size, it is malloc.  Free
 * the result with free.
 */
int mesh_defrag_hint(const void *p);
void *mesh_defrag_malloc(size_t size);

#ifdef __cplusplus
}
#endif

#endif

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

#ifdef __cplusplus
}
#endif

#endif

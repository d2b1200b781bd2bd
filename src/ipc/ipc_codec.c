/* IPC body compression: zstd and lz4 frame, one buffer at a time (Message.fbs, BodyCompression). */
#include "ipc_internal.h"

#include <errno.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* ZSTD_d_stableOutBuffer is in zstd's experimental section. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

const char *aq__ipc_codec_name(aq_ipc_compression codec)
{
    switch (codec) {
    case AQ_IPC_COMPRESSION_NONE:
        return "none";
    case AQ_IPC_COMPRESSION_LZ4_FRAME:
        return "lz4_frame";
    case AQ_IPC_COMPRESSION_ZSTD:
        return "zstd";
    }
    return "unknown";
}

size_t aq__ipc_decompress_limit(aq_ipc_compression codec, size_t src_size)
{
    /* A zstd block of at most 128 KiB can be encoded as an RLE block of 4 bytes, so no valid
     * frame expands more than 32768 times (plus one block for the frame header). LZ4 sequences
     * expand at most 255 times. */
    size_t factor = codec == AQ_IPC_COMPRESSION_ZSTD ? 32768 : 256;
    size_t limit;
    if (!aq__mul_size(src_size, factor, &limit) || !aq__add_size(limit, 131072, &limit)) {
        return SIZE_MAX;
    }
    return limit;
}

/* Drops the pages of [p, p + n) of a clean private file mapping: their contents stay (they
 * come back from the file if read again), but they no longer count as resident memory. */
static void codec_drop(const uint8_t *p, size_t n)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t lo = (uintptr_t)p / page * page, hi = ((uintptr_t)p + n + page - 1) / page * page;
    if (n > 0) {
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
    }
}

/* zstd from a file: CODEC_STEP compressed bytes at a time are read (pread) into a buffer of
 * that size and decoded, so the compressed bytes never become resident pages of the file's
 * mapping (which the kernel maps a whole large folio at a time, up to 2 MiB beyond what is
 * read). The output buffer is stable (ZSTD_d_stableOutBuffer): zstd decodes straight into it
 * and reads its matches there, without a window buffer of its own (up to the frame's window,
 * often several MiB) or the copy out of it. */
enum { CODEC_STEP = 1 << 18 };

static aq_status codec_zstd_read(ZSTD_DCtx *dctx, uint8_t *buf, int fd, size_t file_off,
                                 size_t src_size, ZSTD_outBuffer *out, size_t *hint, aq_error *err)
{
    for (size_t done = 0; done < src_size;) {
        size_t want = src_size - done > CODEC_STEP ? CODEC_STEP : src_size - done;
        for (size_t got = 0; got < want;) {
            ssize_t r = pread(fd, buf + got, want - got, (off_t)(file_off + done + got));
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                return aq__error_set(err, AQ_IO,
                                     "zstd: cannot read %zu compressed bytes at byte offset %zu: "
                                     "%s",
                                     want - got, file_off + done + got,
                                     r < 0 ? strerror(errno) : "the file ends there (truncated?)");
            }
            got += (size_t)r;
        }
        ZSTD_inBuffer in = {buf, want, 0};
        while (in.pos < in.size) {
            size_t before = in.pos, out_before = out->pos;
            *hint = ZSTD_decompressStream(dctx, out, &in);
            if (ZSTD_isError(*hint) && ZSTD_getErrorCode(*hint) != ZSTD_error_dstSize_tooSmall) {
                return aq__error_set(err, AQ_INVALID_DATA, "zstd: %s", ZSTD_getErrorName(*hint));
            }
            if (ZSTD_isError(*hint) || (in.pos == before && out->pos == out_before)) {
                /* No progress with input left: the output is full. */
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "zstd: the data decompresses to more than the buffer's %zu "
                                     "bytes",
                                     out->size);
            }
        }
        done += want;
    }
    return AQ_OK;
}

static aq_status codec_zstd(const uint8_t *src, size_t src_size, int fd, size_t file_off,
                            uint8_t *dst, size_t dst_size, aq_error *err)
{
    if (fd < 0) {
        size_t r = ZSTD_decompress(dst, dst_size, src, src_size);
        if (ZSTD_isError(r)) {
            return aq__error_set(err, AQ_INVALID_DATA, "zstd: %s", ZSTD_getErrorName(r));
        }
        if (r != dst_size) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "zstd: %zu bytes decompressed, the buffer says %zu", r, dst_size);
        }
        return AQ_OK;
    }
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    uint8_t *buf = malloc(src_size > CODEC_STEP ? CODEC_STEP : src_size > 0 ? src_size : 1);
    if (dctx == NULL || buf == NULL) {
        ZSTD_freeDCtx(dctx);
        free(buf);
        return aq__error_set(err, AQ_NO_MEMORY, "zstd: out of memory");
    }
    ZSTD_outBuffer out = {dst, dst_size, 0};
    /* An older libzstd, without the parameter or refusing it, decodes through its own window
     * instead: the same bytes, more memory. */
#ifdef ZSTD_d_stableOutBuffer
    (void)ZSTD_DCtx_setParameter(dctx, ZSTD_d_stableOutBuffer, 1);
#endif
    size_t hint = 1;
    aq_status st = codec_zstd_read(dctx, buf, fd, file_off, src_size, &out, &hint, err);
    /* Concatenated frames decode on, as ZSTD_decompress does; the last must be complete. */
    if (st == AQ_OK && hint != 0) {
        st = aq__error_set(err, AQ_INVALID_DATA, "zstd: the compressed buffer is truncated");
    } else if (st == AQ_OK && out.pos != dst_size) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "zstd: %zu bytes decompressed, the buffer says %zu", out.pos, dst_size);
    }
    ZSTD_freeDCtx(dctx);
    free(buf);
    return st;
}

aq_status aq__ipc_decompress(aq_ipc_compression codec, const uint8_t *src, size_t src_size, int fd,
                             size_t file_off, uint8_t *dst, size_t dst_size, aq_error *err)
{
    if (codec == AQ_IPC_COMPRESSION_ZSTD) {
        return codec_zstd(src, src_size, fd, file_off, dst, dst_size, err);
    }
    LZ4F_dctx *dctx = NULL;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION))) {
        return aq__error_set(err, AQ_NO_MEMORY, "lz4: out of memory");
    }
    aq_status st = AQ_OK;
    size_t in_done = 0, out_done = 0;
    for (;;) {
        size_t in_n = src_size - in_done, out_n = dst_size - out_done;
        size_t hint = LZ4F_decompress(dctx, dst + out_done, &out_n, src + in_done, &in_n, NULL);
        if (LZ4F_isError(hint)) {
            st = aq__error_set(err, AQ_INVALID_DATA, "lz4: %s", LZ4F_getErrorName(hint));
            goto done;
        }
        in_done += in_n;
        out_done += out_n;
        if (hint == 0) {
            /* End of a frame; Arrow writes one frame per buffer, but concatenated frames are
             * valid lz4 and decode on. */
            if (in_done == src_size) {
                break;
            }
            continue;
        }
        if (in_done == src_size || (in_n == 0 && out_n == 0)) {
            st = aq__error_set(err, AQ_INVALID_DATA, "lz4: the compressed buffer is truncated");
            goto done;
        }
    }
    if (out_done != dst_size) {
        st = aq__error_set(err, AQ_INVALID_DATA, "lz4: %zu bytes decompressed, the buffer says %zu",
                           out_done, dst_size);
    }
    if (st == AQ_OK && fd >= 0) {
        codec_drop(src, src_size);
    }
done:
    LZ4F_freeDecompressionContext(dctx);
    return st;
}

size_t aq__ipc_compress_bound(aq_ipc_compression codec, size_t size)
{
    if (codec == AQ_IPC_COMPRESSION_ZSTD) {
        return ZSTD_compressBound(size) + 4; /* + the content checksum */
    }
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentSize = size;
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    return LZ4F_compressFrameBound(size, &prefs);
}

aq_status aq__ipc_compress(aq_ipc_compression codec, int level, const uint8_t *src, size_t src_size,
                           uint8_t *dst, size_t dst_cap, size_t *out_size, aq_error *err)
{
    size_t r;
    if (codec == AQ_IPC_COMPRESSION_ZSTD) {
        /* With the frame's content checksum (XXH64, 4 bytes): a flipped bit in a compressed
         * buffer fails the read instead of changing the weights. Every zstd reader checks it. */
        ZSTD_CCtx *cc = ZSTD_createCCtx();
        if (cc == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "zstd: out of memory");
        }
        r = ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, level != 0 ? level : 1);
        if (!ZSTD_isError(r)) {
            r = ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
        }
        if (!ZSTD_isError(r)) {
            r = ZSTD_compress2(cc, dst, dst_cap, src, src_size);
        }
        ZSTD_freeCCtx(cc);
        if (ZSTD_isError(r)) {
            return aq__error_set(err, AQ_INTERNAL, "zstd: %s", ZSTD_getErrorName(r));
        }
    } else {
        LZ4F_preferences_t prefs;
        memset(&prefs, 0, sizeof prefs);
        prefs.frameInfo.contentSize = src_size;
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
        prefs.compressionLevel = level;
        r = LZ4F_compressFrame(dst, dst_cap, src, src_size, &prefs);
        if (LZ4F_isError(r)) {
            return aq__error_set(err, AQ_INTERNAL, "lz4: %s", LZ4F_getErrorName(r));
        }
    }
    *out_size = r;
    return AQ_OK;
}

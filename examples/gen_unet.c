/*
 * gen_unet: writes a deterministic, diffusers-style UNet checkpoint (safetensors) for the demo
 * and the memory benchmark. The layout is that of Stable Diffusion 1.x's UNet2DConditionModel
 * (diffusers names and shapes: conv_in, time_embedding, down/mid/up blocks of resnets and
 * transformer blocks with self- and cross-attention, conv_out) with a chosen base width:
 * width 320 is the real model (860 M parameters), width 80 gives about 54 M.
 *
 * Values imitate trained weights: Gaussian with a 1/sqrt(fan_in) scale, heavy tails (about 1%
 * of values stretched), and a few outlier channels per tensor (whole output rows scaled up, and
 * a few input columns), which is what makes low-bit quantization of real diffusion weights
 * hard. Each tensor's values depend only on its name and the seed, not on the order.
 *
 *   gen_unet OUT.safetensors [--width N] [--dtype f32|f16|bf16] [--seed N]
 */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TENSORS 2048
#define CROSS_DIM 768

typedef struct spec {
    char name[128];
    int64_t shape[4];
    size_t ndim;
    int kind; /* 0 weight, 1 bias, 2 norm weight */
} spec;

static spec specs[MAX_TENSORS];
static size_t n_specs;

static void add(const char *name, int kind, size_t ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    if (n_specs == MAX_TENSORS) {
        fprintf(stderr, "gen_unet: too many tensors\n");
        exit(2);
    }
    spec *s = &specs[n_specs++];
    snprintf(s->name, sizeof s->name, "%s", name);
    int64_t dims[4] = {a, b, c, d};
    memcpy(s->shape, dims, sizeof dims);
    s->ndim = ndim;
    s->kind = kind;
}

static void addf(int kind, size_t ndim, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt,
                 ...) __attribute__((format(printf, 7, 8)));

#include <stdarg.h>
static void addf(int kind, size_t ndim, int64_t a, int64_t b, int64_t c, int64_t d, const char *fmt,
                 ...)
{
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    add(name, kind, ndim, a, b, c, d);
}

static void conv(const char *p, const char *n, int64_t out, int64_t in, int64_t k)
{
    addf(0, 4, out, in, k, k, "%s.%s.weight", p, n);
    addf(1, 1, out, 0, 0, 0, "%s.%s.bias", p, n);
}

static void linear(const char *p, const char *n, int64_t out, int64_t in, int bias)
{
    addf(0, 2, out, in, 0, 0, "%s.%s.weight", p, n);
    if (bias) {
        addf(1, 1, out, 0, 0, 0, "%s.%s.bias", p, n);
    }
}

static void norm(const char *p, const char *n, int64_t ch)
{
    addf(2, 1, ch, 0, 0, 0, "%s.%s.weight", p, n);
    addf(1, 1, ch, 0, 0, 0, "%s.%s.bias", p, n);
}

static void resnet(const char *p, int64_t in, int64_t out, int64_t temb)
{
    norm(p, "norm1", in);
    conv(p, "conv1", out, in, 3);
    linear(p, "time_emb_proj", out, temb, 1);
    norm(p, "norm2", out);
    conv(p, "conv2", out, out, 3);
    if (in != out) {
        conv(p, "conv_shortcut", out, in, 1);
    }
}

static void transformer(const char *p, int64_t ch)
{
    char b[160];
    norm(p, "norm", ch);
    conv(p, "proj_in", ch, ch, 1);
    snprintf(b, sizeof b, "%s.transformer_blocks.0", p);
    norm(b, "norm1", ch);
    linear(b, "attn1.to_q", ch, ch, 0);
    linear(b, "attn1.to_k", ch, ch, 0);
    linear(b, "attn1.to_v", ch, ch, 0);
    linear(b, "attn1.to_out.0", ch, ch, 1);
    norm(b, "norm2", ch);
    linear(b, "attn2.to_q", ch, ch, 0);
    linear(b, "attn2.to_k", ch, CROSS_DIM, 0);
    linear(b, "attn2.to_v", ch, CROSS_DIM, 0);
    linear(b, "attn2.to_out.0", ch, ch, 1);
    norm(b, "norm3", ch);
    linear(b, "ff.net.0.proj", 8 * ch, ch, 1);
    linear(b, "ff.net.2", ch, 4 * ch, 1);
    conv(p, "proj_out", ch, ch, 1);
}

static void build(int64_t w)
{
    int64_t c[4] = {w, 2 * w, 4 * w, 4 * w};
    int64_t temb = 4 * w;
    char p[128];
    conv("", "conv_in", c[0], 4, 3);
    linear("time_embedding", "linear_1", temb, w, 1);
    linear("time_embedding", "linear_2", temb, temb, 1);
    for (int i = 0; i < 4; i++) {
        int64_t in = i == 0 ? c[0] : c[i - 1];
        for (int j = 0; j < 2; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
            resnet(p, j == 0 ? in : c[i], c[i], temb);
            if (i < 3) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
                transformer(p, c[i]);
            }
        }
        if (i < 3) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0", i);
            conv(p, "conv", c[i], c[i], 3);
        }
    }
    resnet("mid_block.resnets.0", c[3], c[3], temb);
    transformer("mid_block.attentions.0", c[3]);
    resnet("mid_block.resnets.1", c[3], c[3], temb);
    int64_t rc[4] = {c[3], c[2], c[1], c[0]};
    int64_t prev = c[3];
    for (int i = 0; i < 4; i++) {
        int64_t out = rc[i];
        int64_t in = rc[i + 1 < 4 ? i + 1 : 3];
        for (int j = 0; j < 3; j++) {
            int64_t skip = j == 2 ? in : out;
            int64_t rin = j == 0 ? prev : out;
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            resnet(p, rin + skip, out, temb);
            if (i > 0) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                transformer(p, out);
            }
        }
        if (i < 3) {
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0", i);
            conv(p, "conv", out, out, 3);
        }
        prev = out;
    }
    norm("", "conv_norm_out", c[0]);
    conv("", "conv_out", 4, c[0], 3);
    /* The top-level names were built as ".conv_in...": drop the leading dot. */
    for (size_t i = 0; i < n_specs; i++) {
        if (specs[i].name[0] == '.') {
            memmove(specs[i].name, specs[i].name + 1, strlen(specs[i].name));
        }
    }
}

/* splitmix64, seeded from the tensor name. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * 0x1p-53;
}

static double rng_normal(uint64_t *s)
{
    double u = rng_uniform(s), v = rng_uniform(s);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

static uint64_t hash_name(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    }
    return h;
}

static size_t elements(const spec *s)
{
    size_t n = 1;
    for (size_t d = 0; d < s->ndim; d++) {
        n *= (size_t)s->shape[d];
    }
    return n;
}

static void encode(float x, aq_st_dtype dt, uint8_t *out)
{
    if (dt == AQ_ST_F32) {
        memcpy(out, &x, 4);
        return;
    }
    uint32_t u;
    memcpy(&u, &x, 4);
    uint16_t h;
    if (dt == AQ_ST_BF16) {
        u += 0x7fffu + ((u >> 16) & 1u);
        h = (uint16_t)(u >> 16);
    } else {
        /* float16: values here are small and finite; round to nearest even. */
        uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
        uint32_t a = u & 0x7fffffffu;
        if (a >= 0x477ff000u) {
            h = (uint16_t)(sign | 0x7c00u);
        } else if (a < 0x38800000u) {
            float v;
            memcpy(&v, &a, 4);
            v = v * 0x1p24f;
            float r = (v + 0x1p23f) - 0x1p23f;
            h = (uint16_t)(sign | (uint16_t)r);
        } else {
            uint32_t rb = a - 0x38000000u;
            h = (uint16_t)(sign | (uint16_t)((rb + 0xfffu + ((rb >> 13) & 1u)) >> 13));
        }
    }
    memcpy(out, &h, 2);
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    long width = 80;
    uint64_t seed = 2024;
    aq_st_dtype dt = AQ_ST_F32;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--width") == 0 && i + 1 < argc) {
            width = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            dt = strcmp(v, "f16") == 0    ? AQ_ST_F16
                 : strcmp(v, "bf16") == 0 ? AQ_ST_BF16
                                          : AQ_ST_F32;
        } else if (out == NULL && argv[i][0] != '-') {
            out = argv[i];
        } else {
            fprintf(stderr, "usage: gen_unet OUT.safetensors [--width N] [--dtype f32|f16|bf16] "
                            "[--seed N]\n");
            return 2;
        }
    }
    if (out == NULL || width < 8 || width % 8 != 0 || width > 4096) {
        fprintf(stderr, "gen_unet: need OUT and a width that is a multiple of 8 (8..4096)\n");
        return 2;
    }
    build(width);
    aq_st_spec *decl = calloc(n_specs, sizeof *decl);
    size_t es = aq_st_dtype_size(dt);
    size_t total = 0;
    for (size_t i = 0; i < n_specs; i++) {
        decl[i] = (aq_st_spec){specs[i].name,           dt, NULL, specs[i].shape, specs[i].ndim,
                               elements(&specs[i]) * es};
        total += elements(&specs[i]);
    }
    char wbuf[32];
    snprintf(wbuf, sizeof wbuf, "%ld", width);
    const char *mk[3] = {"format", "generator", "width"};
    const char *mv[3] = {"pt", "arrowquant gen_unet (synthetic SD-1.x-style UNet)", wbuf};
    aq_error err;
    aq_st_writer *w;
    if (aq_st_writer_open(out, decl, n_specs, mk, mv, 3, &w, &err) != AQ_OK) {
        fprintf(stderr, "gen_unet: %s\n", err.message);
        return 1;
    }
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = malloc(CHUNK * 4);
    for (size_t i = 0; i < n_specs; i++) {
        const spec *s = &specs[i];
        uint64_t st = hash_name(s->name, seed);
        size_t n = elements(s);
        size_t rows = (size_t)s->shape[0];
        size_t cols = n / rows;
        double fan_in = s->ndim >= 2 ? (double)cols : 1.0;
        double std = s->kind == 0 ? 1.0 / sqrt(fan_in) : s->kind == 1 ? 0.02 : 0.1;
        /* Outlier channels: rows (output channels) and a few input columns scaled up. */
        uint64_t ost = st ^ 0x5bd1e995ull;
        size_t hot_row_a = (size_t)(rng_next(&ost) % rows);
        size_t hot_row_b = (size_t)(rng_next(&ost) % rows);
        size_t hot_col = (size_t)(rng_next(&ost) % cols);
        double row_gain = 6.0 + 10.0 * rng_uniform(&ost);
        for (size_t k0 = 0; k0 < n; k0 += CHUNK) {
            size_t m = n - k0 < CHUNK ? n - k0 : CHUNK;
            for (size_t j = 0; j < m; j++) {
                size_t k = k0 + j;
                double x = rng_normal(&st) * std;
                if (rng_uniform(&st) < 0.01) {
                    x *= exp(1.5 * fabs(rng_normal(&st))); /* heavy tail */
                }
                if (s->kind == 0) {
                    size_t r = k / cols, c = k % cols;
                    if (r == hot_row_a || r == hot_row_b) {
                        x *= row_gain;
                    }
                    if (c == hot_col) {
                        x *= 8.0;
                    }
                } else if (s->kind == 2) {
                    x += 1.0; /* norm scales sit around 1 */
                }
                encode((float)x, dt, buf + j * es);
            }
            if (aq_st_writer_write(w, buf, m * es, &err) != AQ_OK) {
                fprintf(stderr, "gen_unet: %s\n", err.message);
                return 1;
            }
        }
    }
    if (aq_st_writer_finish(w, &err) != AQ_OK) {
        fprintf(stderr, "gen_unet: %s\n", err.message);
        return 1;
    }
    aq_st_writer_free(w);
    free(buf);
    free(decl);
    printf("%s: %zu tensors, %zu parameters, width %ld, %s\n", out, n_specs, total, width,
           aq_st_dtype_name(dt));
    return 0;
}

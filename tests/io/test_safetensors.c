/* The safetensors reader and writer: bad headers give one clear error each, good files read
 * back exactly, sharded checkpoints and folders are found, and a failed write leaves nothing. */
#include "aq_test.h"
#include "io_internal.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Builds a file image: 8-byte length, the JSON text, then `data_len` bytes 0, 1, 2, ... */
static uint8_t *img(const char *json, size_t data_len, size_t *size)
{
    size_t n = strlen(json);
    *size = 8 + n + data_len;
    uint8_t *b = malloc(*size + 1);
    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(((uint64_t)n >> (8 * i)) & 0xff);
    }
    memcpy(b + 8, json, n);
    for (size_t i = 0; i < data_len; i++) {
        b[8 + n + i] = (uint8_t)i;
    }
    return b;
}

static aq_status parse(const char *json, size_t data_len, aq_error *err)
{
    size_t size;
    uint8_t *b = img(json, data_len, &size);
    aq__st_header h;
    aq_status st = aq__st_parse(b, size, "x.safetensors", &h, err);
    if (st == AQ_OK) {
        aq__st_header_reset(&h);
    }
    free(b);
    return st;
}

TEST(parse_good_file)
{
    aq_error err;
    size_t size;
    uint8_t *b = img("{\"__metadata__\":{\"format\":\"pt\"},"
                     "\"b\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[8,11]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"e\":{\"dtype\":\"BF16\",\"shape\":[0,4],\"data_offsets\":[11,11]}}   ",
                     11, &size);
    aq__st_header h;
    CHECK_OK(aq__st_parse(b, size, "x", &h, &err));
    CHECK(h.n == 3);
    CHECK(strcmp(h.entries[0].name, "a") == 0 && h.entries[0].dtype == AQ_ST_F32);
    CHECK(h.entries[0].elements == 2 && h.entries[0].begin == 0 && h.entries[0].end == 8);
    CHECK(strcmp(h.entries[1].name, "b") == 0 && h.entries[1].dtype == AQ_ST_I8);
    CHECK(h.entries[2].elements == 0 && h.entries[2].ndim == 2);
    CHECK(h.n_meta == 1 && strcmp(h.meta_keys[0], "format") == 0 &&
          strcmp(h.meta_values[0], "pt") == 0);
    aq__st_header_reset(&h);
    free(b);
}

/* The member scanner: escapes, white space, nested unknown fields, and names that are equal
 * only once their escapes are decoded. */
TEST(parse_member_scanner)
{
    aq_error err;
    size_t size;
    uint8_t *b =
        img("{\n\t\"a\\\"}\\u00e9\" : {\"x\":[{\"}\":\"]\"}],\"dtype\":\"U8\",\"shape\":[1],"
            "\"data_offsets\":[0,1]} ,\r\n\"__metadata__\":{\"k\":\"v,}\"}\n}  ",
            1, &size);
    aq__st_header h;
    CHECK_OK(aq__st_parse(b, size, "x", &h, &err));
    CHECK(h.n == 1 && strcmp(h.entries[0].name, "a\"}\xc3\xa9") == 0);
    CHECK(strcmp(h.entries[0].dtype_name, "U8") == 0 && h.entries[0].shape[0] == 1);
    CHECK(h.n_meta == 1 && strcmp(h.meta_values[0], "v,}") == 0);
    aq__st_header_reset(&h);
    free(b);
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"\\u0061\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                      2, &err),
                AQ_INVALID_DATA, "duplicate");
    CHECK_FAILS(parse("{\"__metadata__\":{},\"__metadata__\":{}}", 0, &err), AQ_INVALID_DATA,
                "duplicate");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1, &err),
                AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]]}", 1, &err),
                AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\":tru}", 0, &err), AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\\x\":1}", 0, &err), AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\":1 \"b\":2}", 0, &err), AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1, &err),
                AQ_INVALID_DATA, "shape[0] is not a non-negative integer");
    CHECK_OK(parse("{}", 0, &err));
    CHECK_OK(parse("{ }", 0, &err));
}

TEST(parse_too_short)
{
    aq_error err;
    uint8_t b[5] = {1, 2, 3, 4, 5};
    aq__st_header h;
    CHECK_FAILS(aq__st_parse(b, 5, "x", &h, &err), AQ_INVALID_DATA, "too short");
}

TEST(parse_header_larger_than_file)
{
    aq_error err;
    size_t size;
    uint8_t *b = img("{}", 0, &size);
    b[0] = 200; /* claims 200 bytes of JSON */
    aq__st_header h;
    CHECK_FAILS(aq__st_parse(b, size, "x", &h, &err), AQ_INVALID_DATA, "larger than the file");
    free(b);
}

TEST(parse_header_over_cap)
{
    aq_error err;
    uint8_t b[16] = {0, 0, 0, 0, 1, 0, 0, 0, '{', '}'};
    aq__st_header h;
    CHECK_FAILS(aq__st_parse(b, sizeof b, "x", &h, &err), AQ_INVALID_DATA, "exceeds the limit");
}

TEST(parse_not_json)
{
    aq_error err;
    CHECK_FAILS(parse("PK\x03\x04 zip?", 0, &err), AQ_INVALID_DATA, "not a JSON object");
    CHECK_FAILS(parse("{\"a\": [1,2", 0, &err), AQ_INVALID_DATA, "JSON is invalid");
    CHECK_FAILS(parse("{\"a\":1} x", 0, &err), AQ_INVALID_DATA, "JSON is invalid");
}

TEST(parse_duplicate_names)
{
    aq_error err;
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                      2, &err),
                AQ_INVALID_DATA, "duplicate");
}

TEST(parse_overlap)
{
    aq_error err;
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                      6, &err),
                AQ_INVALID_DATA, "overlaps tensor 'a'");
}

TEST(parse_gap)
{
    aq_error err;
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
                      6, &err),
                AQ_INVALID_DATA, "gap in the data region: bytes [2, 4)");
}

TEST(parse_out_of_range)
{
    aq_error err;
    CHECK_FAILS(
        parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 10, &err),
        AQ_INVALID_DATA, "extend past the data region");
}

TEST(parse_trailing_bytes)
{
    aq_error err;
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5, &err),
                AQ_INVALID_DATA, "trailing bytes");
}

TEST(parse_size_mismatch)
{
    aq_error err;
    CHECK_FAILS(
        parse("{\"a\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8, &err),
        AQ_INVALID_DATA, "hold 8 bytes, but F16 x 6 elements need 12");
}

TEST(parse_bad_fields)
{
    aq_error err;
    CHECK_FAILS(parse("{\"a\":{\"shape\":[2],\"data_offsets\":[0,2]}}", 2, &err), AQ_INVALID_DATA,
                "\"dtype\" missing");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", 2, &err),
                AQ_INVALID_DATA, "shape[0] is not a non-negative integer");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 2, &err),
                AQ_INVALID_DATA, "shape[0]");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,0]}}", 2, &err),
                AQ_INVALID_DATA, "end before they begin");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0]}}", 2, &err),
                AQ_INVALID_DATA, "[begin, end]");
    CHECK_FAILS(parse("{\"a\":3}", 0, &err), AQ_INVALID_DATA, "expected an object");
    CHECK_FAILS(parse("{\"__metadata__\":{\"k\":1}}", 0, &err), AQ_INVALID_DATA, "is not a string");
    CHECK_FAILS(parse("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
                      "\"data_offsets\":[0,2]}}",
                      2, &err),
                AQ_OVERFLOW, "overflows");
}

TEST(parse_unknown_dtype_is_kept_raw)
{
    aq_error err;
    size_t size;
    uint8_t *b = img("{\"q\":{\"dtype\":\"Q7\",\"shape\":[3],\"data_offsets\":[0,5]}}", 5, &size);
    aq__st_header h;
    CHECK_OK(aq__st_parse(b, size, "x", &h, &err));
    CHECK(h.n == 1 && h.entries[0].dtype == AQ_ST_UNKNOWN);
    CHECK(strcmp(h.entries[0].dtype_name, "Q7") == 0);
    aq__st_header_reset(&h);
    free(b);
}

/* ---- files ---- */

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/aq_io_test_XXXXXX");
    if (mkdtemp(tmpdir) == NULL) {
        abort();
    }
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    char p[512];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            remove_tree(p);
        } else {
            unlink(p);
        }
    }
    closedir(d);
    rmdir(dir);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        n += de->d_name[0] != '.';
    }
    if (d != NULL) {
        closedir(d);
    }
    return n;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, n, f) != n) {
        abort();
    }
    fclose(f);
}

/* Writes a file with our writer: tensors "name0" .. of F32 [rows, 4] holding i * 0.5. */
static aq_status write_f32(const char *path, const char *const *names, size_t n, aq_error *err)
{
    aq_st_spec specs[8];
    int64_t shape[2] = {3, 4};
    for (size_t i = 0; i < n; i++) {
        specs[i] = (aq_st_spec){names[i], AQ_ST_F32, NULL, shape, 2, 48};
    }
    const char *k[1] = {"format"};
    const char *v[1] = {"pt"};
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, n, k, v, 1, &w, err);
    if (st != AQ_OK) {
        return st;
    }
    for (size_t i = 0; i < n && st == AQ_OK; i++) {
        float x[12];
        for (int j = 0; j < 12; j++) {
            x[j] = (float)(i * 100 + (size_t)j) * 0.5f;
        }
        st = aq_st_writer_write(w, x, 20, err);
        if (st == AQ_OK) {
            st = aq_st_writer_write(w, (const char *)x + 20, 28, err);
        }
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

TEST(writer_roundtrip)
{
    aq_error err;
    make_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    const char *names[2] = {"z.weight", "a.weight"};
    CHECK_OK(write_f32(path, names, 2, &err));
    CHECK(count_entries(tmpdir) == 1);
    aq_model *m;
    CHECK_OK(aq_model_open(path, &m, &err));
    CHECK(aq_model_count(m) == 2);
    const aq_st_tensor *t = aq_model_tensor(m, 0);
    CHECK(strcmp(t->name, "z.weight") == 0); /* file order, as declared */
    CHECK(t->dtype == AQ_ST_F32 && t->ndim == 2 && t->shape[0] == 3 && t->nbytes == 48);
    float x;
    memcpy(&x, (const char *)aq_model_tensor(m, 1)->data + 4 * 5, 4);
    CHECK(x == 52.5f);
    const char *k, *v;
    CHECK(aq_model_metadata_count(m) == 1);
    CHECK_OK(aq_model_metadata_get(m, 0, &k, &v, &err));
    CHECK(strcmp(k, "format") == 0 && strcmp(v, "pt") == 0);
    /* An index past the count is an error, and the outputs stay as they were. */
    const char *k2 = "unset";
    CHECK(aq_model_metadata_get(m, 1, &k2, &v, &err) == AQ_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "index 1 is not below the 1 metadata entries") != NULL);
    CHECK(strcmp(k2, "unset") == 0);
    CHECK(aq_model_skipped_get(m, 0, &k2, &v, &err) == AQ_INVALID_ARGUMENT);
    CHECK(aq_model_component_get(m, 0, &k2, &v, &err) == AQ_INVALID_ARGUMENT);
    aq_model_release(m, 0);
    memcpy(&x, aq_model_tensor(m, 0)->data, 4); /* still readable after release */
    CHECK(x == 0.0f);
    aq_model_free(m);
    remove_tree(tmpdir);
}

TEST(writer_incomplete_leaves_nothing)
{
    aq_error err;
    make_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", tmpdir);
    int64_t shape[1] = {4};
    aq_st_spec spec = {"w", AQ_ST_F32, NULL, shape, 1, 16};
    aq_st_writer *w;
    CHECK_OK(aq_st_writer_open(path, &spec, 1, NULL, NULL, 0, &w, &err));
    float x[5] = {1, 2, 3, 4, 5};
    CHECK_FAILS(aq_st_writer_write(w, x, 20, &err), AQ_INVALID_ARGUMENT, "more bytes");
    CHECK_OK(aq_st_writer_write(w, x, 8, &err));
    CHECK_FAILS(aq_st_writer_finish(w, &err), AQ_INVALID_ARGUMENT, "8 of 16");
    CHECK(count_entries(tmpdir) == 1); /* the temporary file, until freed */
    aq_st_writer_free(w);
    CHECK(count_entries(tmpdir) == 0);
    aq_st_spec bad = {"w", AQ_ST_F32, NULL, shape, 1, 12};
    CHECK_FAILS(aq_st_writer_open(path, &bad, 1, NULL, NULL, 0, &w, &err), AQ_INVALID_ARGUMENT,
                "12 bytes declared");
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no/such/dir/m.safetensors", tmpdir);
    CHECK_FAILS(aq_st_writer_open(missing, &spec, 1, NULL, NULL, 0, &w, &err), AQ_IO,
                "does not exist");
    CHECK(count_entries(tmpdir) == 0);
    remove_tree(tmpdir);
}

TEST(model_sharded_index)
{
    aq_error err;
    make_tmpdir();
    char p[512];
    const char *n1[1] = {"a"};
    const char *n2[2] = {"b", "c"};
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", tmpdir);
    CHECK_OK(write_f32(p, n1, 1, &err));
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", tmpdir);
    CHECK_OK(write_f32(p, n2, 2, &err));
    const char *index = "{\"metadata\":{\"total_size\":144,\"origin\":\"test\"},\"weight_map\":"
                        "{\"c\":\"model-00002-of-00002.safetensors\","
                        "\"a\":\"model-00001-of-00002.safetensors\","
                        "\"b\":\"model-00002-of-00002.safetensors\"}}";
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tmpdir);
    write_bytes(p, index, strlen(index));
    aq_model *m;
    CHECK_OK(aq_model_open(p, &m, &err));
    CHECK(aq_model_count(m) == 3);
    CHECK(strcmp(aq_model_tensor(m, 0)->name, "a") == 0);
    CHECK(strcmp(aq_model_tensor(m, 2)->name, "c") == 0);
    CHECK(aq_model_data_bytes(m) == 144);
    const char *k, *v;
    CHECK_OK(aq_model_metadata_get(m, 0, &k, &v, &err));
    CHECK(strcmp(k, "origin") == 0 && strcmp(v, "test") == 0);
    aq_model_free(m);
    /* The folder finds the index too. */
    CHECK_OK(aq_model_open(tmpdir, &m, &err));
    CHECK(aq_model_count(m) == 3);
    aq_model_free(m);
    /* A missing shard. */
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tmpdir);
    CHECK_FAILS(aq_model_open(p, &m, &err), AQ_IO,
                "names shard 'model-00002-of-00002.safetensors', which is missing");
    remove_tree(tmpdir);
}

TEST(model_index_disagrees_with_shard)
{
    aq_error err;
    make_tmpdir();
    char p[512];
    const char *n1[2] = {"a", "x"};
    snprintf(p, sizeof p, "%s/s1.safetensors", tmpdir);
    CHECK_OK(write_f32(p, n1, 2, &err));
    const char *index = "{\"weight_map\":{\"a\":\"s1.safetensors\"}}";
    snprintf(p, sizeof p, "%s/i.safetensors.index.json", tmpdir);
    write_bytes(p, index, strlen(index));
    aq_model *m;
    CHECK_FAILS(aq_model_open(p, &m, &err), AQ_INVALID_DATA, "holds tensor 'x'");
    remove_tree(tmpdir);
}

TEST(model_diffusers_pipeline)
{
    aq_error err;
    make_tmpdir();
    char p[512];
    const char *mi = "{\"_class_name\":\"StableDiffusionPipeline\",\"unet\":[\"diffusers\","
                     "\"UNet2DConditionModel\"],\"vae\":[\"diffusers\",\"AutoencoderKL\"],"
                     "\"scheduler\":[\"diffusers\",\"DDIMScheduler\"],\"safety_checker\":[null,"
                     "null]}";
    snprintf(p, sizeof p, "%s/model_index.json", tmpdir);
    write_bytes(p, mi, strlen(mi));
    const char *comps[3] = {"unet", "vae", "scheduler"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, comps[i]);
        mkdir(p, 0755);
    }
    const char *nu[1] = {"conv_in.weight"};
    const char *nv[1] = {"decoder.conv_out.weight"};
    /* unet has only the fp16 variant, vae has both: the plain file wins. */
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.fp16.safetensors", tmpdir);
    CHECK_OK(write_f32(p, nu, 1, &err));
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", tmpdir);
    CHECK_OK(write_f32(p, nv, 1, &err));
    const char *nv16[1] = {"other"};
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.fp16.safetensors", tmpdir);
    CHECK_OK(write_f32(p, nv16, 1, &err));
    snprintf(p, sizeof p, "%s/scheduler/scheduler_config.json", tmpdir);
    write_bytes(p, "{}", 2);
    aq_model *m;
    CHECK_OK(aq_model_open(tmpdir, &m, &err));
    CHECK(aq_model_count(m) == 2);
    CHECK(strcmp(aq_model_tensor(m, 0)->name, "unet/conv_in.weight") == 0);
    CHECK(strcmp(aq_model_tensor(m, 0)->component, "unet") == 0);
    CHECK(strcmp(aq_model_tensor(m, 1)->name, "vae/decoder.conv_out.weight") == 0);
    CHECK(aq_model_component_count(m) == 2);
    const char *name, *file;
    CHECK_OK(aq_model_component_get(m, 0, &name, &file, &err));
    CHECK(strcmp(name, "unet") == 0 &&
          strcmp(file, "unet/diffusion_pytorch_model.fp16.safetensors") == 0);
    size_t at;
    CHECK(aq_model_find(m, "vae/decoder.conv_out.weight", &at) == 0 && at == 1);
    aq_model_free(m);
    remove_tree(tmpdir);
}

TEST(model_open_errors)
{
    aq_error err;
    make_tmpdir();
    aq_model *m;
    char p[512];
    snprintf(p, sizeof p, "%s/missing.safetensors", tmpdir);
    CHECK_FAILS(aq_model_open(p, &m, &err), AQ_IO, "No such file");
    snprintf(p, sizeof p, "%s/text.safetensors", tmpdir);
    write_bytes(p, "hello world, not a model", 24);
    CHECK_FAILS(aq_model_open(p, &m, &err), AQ_INVALID_DATA, "exceeds the limit");
    CHECK_FAILS(aq_model_open(tmpdir, &m, &err), AQ_INVALID_DATA, "text.safetensors");
    unlink(p);
    CHECK_FAILS(aq_model_open(tmpdir, &m, &err), AQ_INVALID_ARGUMENT, "no safetensors file");
    /* A truncated file: written whole, then cut. */
    const char *names[1] = {"w"};
    snprintf(p, sizeof p, "%s/t.safetensors", tmpdir);
    CHECK_OK(write_f32(p, names, 1, &err));
    struct stat sb;
    CHECK(stat(p, &sb) == 0);
    CHECK(truncate(p, sb.st_size - 8) == 0); /* 40 of the 48 data bytes left */
    CHECK_FAILS(aq_model_open(p, &m, &err), AQ_INVALID_DATA, "extend past the data region");
    remove_tree(tmpdir);
}

AQ_TEST_MAIN(AQ_CASE(parse_good_file), AQ_CASE(parse_member_scanner), AQ_CASE(parse_too_short),
             AQ_CASE(parse_header_larger_than_file), AQ_CASE(parse_header_over_cap),
             AQ_CASE(parse_not_json), AQ_CASE(parse_duplicate_names), AQ_CASE(parse_overlap),
             AQ_CASE(parse_gap), AQ_CASE(parse_out_of_range), AQ_CASE(parse_trailing_bytes),
             AQ_CASE(parse_size_mismatch), AQ_CASE(parse_bad_fields),
             AQ_CASE(parse_unknown_dtype_is_kept_raw), AQ_CASE(writer_roundtrip),
             AQ_CASE(writer_incomplete_leaves_nothing), AQ_CASE(model_sharded_index),
             AQ_CASE(model_index_disagrees_with_shard), AQ_CASE(model_diffusers_pipeline),
             AQ_CASE(model_open_errors))

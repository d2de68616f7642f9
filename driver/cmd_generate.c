/* cmd_generate.c — `kiln generate MODEL.json --weights W --prompt TEXT [--max-new N]
 * [--temperature T | --greedy] [--top-k K] [--top-p P] [--seed S] [--truncate] [--json]`
 * (SPEC section 2; docs/generation.md).
 *
 * Everything that can be wrong with the request is checked before anything is compiled
 * (flags), then before anything runs (the model is a decoder; the weights load; the
 * tokenizer exists — from the checkpoint's metadata, or the byte tokenizer — and covers
 * the prompt; the prompt fits the context). Then: one prefill over the prompt, and one
 * decode step per new token, each token printed (decoded) as soon as it is picked. Stops
 * at <eos>, after --max-new tokens, or when the context is full.
 *
 * --no-cache re-runs the whole forward pass over the growing sequence for every token
 * instead of the decode step: the slow, obviously right way, which the tests compare the
 * KV-cached path against token for token.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "generate.h"
#include "tokenizer.h"
#include "train.h"
#include "memlimit.h"

/* Writes s[0..n) as a JSON string body (quotes not included). JSON text is UTF-8: a byte
 * that does not start a whole, valid UTF-8 sequence (a token may hold part of a
 * character) is written as U+FFFD; the ids say exactly what was generated. */
static void json_str(FILE *f, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x80) {
            size_t l = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1;
            if (l > 1 && i + l <= n && kiln_utf8_valid(s + i, l)) {
                fwrite(s + i, 1, l, f);
                i += l - 1;
            } else {
                fputs("\\ufffd", f);
            }
            continue;
        }
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
}

/* The bytes that show token id (a special as its name, an unknown id as U+FFFD). */
static const char *token_text(const kiln_tokenizer *t, int32_t id, size_t *len)
{
    const char *s = kiln_tokenizer_token(t, id, len);
    if (s) return s;
    int32_t base = t->base;
    if (id >= base && id < base + KILN_N_SPECIALS) {
        s = kiln_special_name((kiln_special)(id - base));
        *len = strlen(s);
        return s;
    }
    *len = 3;
    return "\xEF\xBF\xBD";
}

/* A char tokenizer maps code points it never saw to U+FFFD: refuse those in a prompt. */
static bool check_char_prompt(const kiln_tokenizer *t, const char *text, const kiln_ids *ids, const kiln_ids *ends,
                              kiln_diags *d)
{
    if (t->kind != KILN_TOK_CHAR) return true;
    kiln_ids rep = {0};
    KILN_ASSERT(kiln_tokenizer_encode(t, "\xEF\xBF\xBD", 3, &rep, NULL) && rep.n == 1);
    int32_t unknown = rep.v[0];
    kiln_ids_free(&rep);
    for (size_t i = 0; i < ids->n; i++) {
        size_t from = i ? (size_t)ends->v[i - 1] : 0, to = (size_t)ends->v[i];
        if (ids->v[i] != unknown || (to - from == 3 && memcmp(text + from, "\xEF\xBF\xBD", 3) == 0)) continue;
        kiln_diags_add(d, NULL, 0, 0, "--prompt",
                       "'%.*s' (byte %zu) is not in the model's char vocabulary (the characters of its training data)",
                       (int)(to - from), text + from, from);
        return false;
    }
    return true;
}

static int by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* --repeat: the run just made, timed again repeat − 1 times — the prefill over the same
 * prompt, then a decode step and a sampler pick per token with the ids picked the first
 * time — so that the medians (*prefill_s, *decode_s, the first run included) say what
 * one run costs on a machine that may be busy. The sampler's draws are spent, but nothing
 * is printed any more. */
static bool replay(generator *g, sampler *s, const int32_t *seq, int64_t n_prompt, const kiln_ids *out,
                   int64_t repeat, double *prefill_s, double *decode_s, kiln_diags *d)
{
    double *pt = calloc((size_t)repeat, sizeof *pt), *dt = calloc((size_t)repeat, sizeof *dt);
    KILN_ASSERT(pt && dt);
    pt[0] = *prefill_s, dt[0] = *decode_s;
    bool ok = true;
    for (int64_t r = 1; r < repeat && ok; r++) {
        double t0 = progress_now();
        ok = generator_prefill(g, seq, n_prompt, d) != NULL;
        double t1 = progress_now();
        for (size_t k = 1; k < out->n && ok; k++) {
            const float *logits = generator_step(g, out->v[k - 1], n_prompt + (int64_t)k - 1, d);
            double lp;
            ok = logits != NULL;
            int64_t bad;
            if (ok) (void)sampler_pick(s, logits, &lp, &bad); /* a bad row was reported the first time */
        }
        pt[r] = t1 - t0, dt[r] = progress_now() - t1;
    }
    qsort(pt, (size_t)repeat, sizeof *pt, by_double);
    qsort(dt, (size_t)repeat, sizeof *dt, by_double);
    *prefill_s = pt[repeat / 2], *decode_s = dt[repeat / 2];
    free(pt);
    free(dt);
    return ok;
}

typedef struct gen_args {
    const char *weights, *prompt, *source;
    int64_t max_new, top_k, seed, threads, repeat;
    double temperature, top_p;
    bool greedy, truncate, json, no_cache, stats;
} gen_args;

int cmd_generate(int argc, char **argv, kiln_diags *diags)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    gen_args r = {.max_new = 100, .temperature = 1.0, .top_p = 1.0, .threads = cpus < 1 ? 1 : cpus, .repeat = 1};
    bool prompt_given = false, temperature_given = false, top_k_given = false, top_p_given = false;
    cli_flag flags[] = {
        LIMITS_FLAG,
        {"--weights", CLI_STR, &r.weights, NULL, "weights or checkpoint (safetensors) to generate with (required)"},
        {"--prompt", CLI_STR, &r.prompt, &prompt_given, "the text to continue (required without --source)"},
        {"--source", CLI_STR, &r.source, NULL, "the text an encoder-decoder model transforms, its encoder's input (required for those models)"},
        {"--max-new", CLI_INT, &r.max_new, NULL, "most tokens to generate (default 100)"},
        {"--temperature", CLI_NUM, &r.temperature, &temperature_given, "divides the logits before sampling; 0 = greedy (default 1)"},
        {"--greedy", CLI_BOOL, &r.greedy, NULL, "always take the most likely token, same as --temperature 0; not with a sampling --temperature, --top-k or --top-p (default: off)"},
        {"--top-k", CLI_INT, &r.top_k, &top_k_given, "sample among the K most likely tokens only; 0 = all (default 0)"},
        {"--top-p", CLI_NUM, &r.top_p, &top_p_given, "sample from the smallest set of tokens holding P of the mass, in (0, 1] (default 1)"},
        {"--seed", CLI_INT, &r.seed, NULL, "seed of the sampler's random numbers (default 0)"},
        {"--truncate", CLI_BOOL, &r.truncate, NULL, "keep the last tokens of a prompt longer than the context instead of refusing it (default: off)"},
        {"--json", CLI_BOOL, &r.json, NULL, "print one JSON object: text, tokens, ids and per-token log-probabilities (default: off)"},
        {"--no-cache", CLI_BOOL, &r.no_cache, NULL, "re-run the full forward pass for every token instead of the KV cache, slow: a check (default: off)"},
        {"--stats", CLI_BOOL, &r.stats, NULL, "print prefill time and decode tokens/s on stderr (default: off)"},
        THREADS_FLAG(r.threads, "threads of the runtime pool (default: the online CPUs)"),
        {"--repeat", CLI_INT, &r.repeat, NULL, "with --stats: time the prefill and the decode steps N times over and report the medians (default 1)"},
        CLI_PIPELINE_FLAGS,
    };
    cli_args a;
    if (!cli_parse(argc, argv, 2, flags, sizeof flags / sizeof flags[0], &a, diags)) return EXIT_USAGE;
    if (a.n_positional != 1) kiln_diags_add(diags, NULL, 0, 0, "generate", "expects one MODEL.json");
    if (!r.weights) kiln_diags_add(diags, NULL, 0, 0, "generate", "--weights W.safetensors is required");
    if (!r.source && !prompt_given) kiln_diags_add(diags, NULL, 0, 0, "generate", "--prompt TEXT is required");
    if (r.max_new < 0) kiln_diags_add(diags, NULL, 0, 0, "--max-new", "expected 0 or more, got %lld", (long long)r.max_new);
    if (r.temperature < 0)
        kiln_diags_add(diags, NULL, 0, 0, "--temperature", "expected 0 (greedy) or more, got %g", r.temperature);
    if (r.top_k < 0) kiln_diags_add(diags, NULL, 0, 0, "--top-k", "expected 0 (off) or more, got %lld", (long long)r.top_k);
    if (!(r.top_p > 0 && r.top_p <= 1)) kiln_diags_add(diags, NULL, 0, 0, "--top-p", "expected a value in (0, 1], got %g", r.top_p);
    /* --greedy takes the most likely token: a sampling setting beside it would be ignored,
     * so it is refused unless it says the same (--temperature 0) or is off (--top-k 0,
     * --top-p 1) */
    if (r.greedy && temperature_given && r.temperature != 0)
        kiln_diags_add(diags, NULL, 0, 0, "--greedy", "conflicts with --temperature %g: greedy decoding is "
                       "--temperature 0; give one of them", r.temperature);
    if (r.greedy && top_k_given && r.top_k != 0)
        kiln_diags_add(diags, NULL, 0, 0, "--greedy", "conflicts with --top-k %lld: greedy decoding does not sample, "
                       "give one of them", (long long)r.top_k);
    if (r.greedy && top_p_given && r.top_p != 1)
        kiln_diags_add(diags, NULL, 0, 0, "--greedy", "conflicts with --top-p %g: greedy decoding does not sample, "
                       "give one of them", r.top_p);
    cli_threads_check(r.threads, diags);
    if (r.repeat < 1 || r.repeat > 1000) kiln_diags_add(diags, NULL, 0, 0, "--repeat", "expected 1..1000");
    if (!cli_pipeline_valid(diags) || !limits_valid(diags) || diags->n) return EXIT_USAGE;
    if (!cli_pipeline_runs(KILN_RUNS_COMPILE, NULL, NULL, diags)) return EXIT_USAGE;
    if (r.greedy) r.temperature = 0;
    const char *path = a.positional[0];
    cli_threads_use(r.threads);

    int status = EXIT_FAIL;
    size_t len = 0;
    char *text = NULL;
    kiln_tensor_file wf = {0};
    kiln_tokenizer tok;
    generator g;
    sampler s;
    kiln_ids ids = {0}, ends = {0}, out = {0};
    double *logprobs = NULL;
    bool have_tok = false, have_gen = false, have_sampler = false;
    kiln_rt_error err = {{0}};

    if (!(text = train_read_model_text(path, &len, diags))) goto done;
    if (kiln_tensor_file_read(r.weights, &wf, &err) != 0) {
        bind_rt_error(diags, r.weights, &err);
        goto done;
    }
    /* the tokenizer: the checkpoint's, else the model's if it needs no training data */
    kiln_model m;
    if (!train_load_model(&m, text, len, path, a.defines, a.n_defines, NULL, 0, diags)) goto done;
    kiln_tokenizer_config tc = m.tokenizer;
    kiln_model_free(&m);
    if (!ckpt_or_model_tokenizer(&wf, r.weights, tc.kind, "generate with", &tok, diags)) goto done;
    have_tok = true;

    if (!generator_init(&g, text, len, path, a.defines, a.n_defines, diags)) goto done;
    have_gen = true;
    g.whole_context = r.no_cache; /* the reference: the full forward over the whole context */
    if (r.source && !g.has_source) {
        kiln_diags_add(diags, path, 0, 0, NULL,
                       "has no 'src' input: --source is for encoder-decoder models (inputs src, src_mask, tgt_in)");
        goto done;
    }
    if (g.has_source && !r.source) {
        kiln_diags_add(diags, path, 0, 0, NULL, "is an encoder-decoder model: give the text to transform with --source");
        goto done;
    }
    if (!r.prompt) r.prompt = "";

    /* the prompt's tokens; an encoder-decoder's decoder starts from <bos> */
    size_t plen = strlen(r.prompt);
    if (g.has_source) KILN_ASSERT(kiln_ids_push(&ids, kiln_tokenizer_special(&tok, KILN_SPECIAL_BOS)) &&
                                  kiln_ids_push(&ends, 0));
    size_t first_text = ids.n;
    KILN_ASSERT(kiln_tokenizer_encode(&tok, r.prompt, plen, &ids, &ends));
    kiln_ids text_ids = {ids.v + first_text, ids.n - first_text, 0}, text_ends = {ends.v + first_text, ends.n - first_text, 0};
    if (!check_char_prompt(&tok, r.prompt, &text_ids, &text_ends, diags)) goto done;
    if (ids.n == 0) {
        kiln_diags_add(diags, NULL, 0, 0, "--prompt", "is empty: generation continues at least one token");
        goto done;
    }
    if (g.has_source) {
        kiln_ids src = {0}, src_ends = {0};
        KILN_ASSERT(kiln_tokenizer_encode(&tok, r.source, strlen(r.source), &src, &src_ends));
        bool good = check_char_prompt(&tok, r.source, &src, &src_ends, diags);
        if (good && (int64_t)src.n > g.src_len && !r.truncate) {
            kiln_diags_add(diags, NULL, 0, 0, "--source",
                           "is %zu tokens, longer than the model's source length of %lld (--truncate keeps its first "
                           "%lld)", src.n, (long long)g.src_len, (long long)g.src_len);
            good = false;
        }
        for (size_t i = 0; good && i < src.n && (int64_t)i < g.src_len; i++) {
            if (src.v[i] < g.table_rows) continue;
            kiln_diags_add(diags, NULL, 0, 0, "--source", "token %zu has id %d, past the model's embedding", i, src.v[i]);
            good = false;
        }
        if (good) generator_set_source(&g, src.v, (int64_t)src.n < g.src_len ? (int64_t)src.n : g.src_len);
        kiln_ids_free(&src);
        kiln_ids_free(&src_ends);
        if (!good) goto done;
    }
    cli_print_dump(g.prefill.c.dump); /* --dump-after: the prefill's, then the step's */
    cli_print_dump(g.step.c.dump);
    if (!generator_load(&g, &wf, r.weights, diags)) goto done;
    size_t start = 0;
    if ((int64_t)ids.n > g.context) {
        if (!r.truncate) {
            kiln_diags_add(diags, NULL, 0, 0, "--prompt",
                           "is %zu tokens, longer than the model's context of %lld (--truncate keeps its last %lld)",
                           ids.n, (long long)g.context, (long long)g.context);
            goto done;
        }
        start = ids.n - (size_t)g.context;
    }
    int64_t n_prompt = (int64_t)(ids.n - start);
    for (int64_t i = 0; i < n_prompt; i++) {
        int32_t id = ids.v[start + (size_t)i];
        if (id >= g.table_rows) {
            kiln_diags_add(diags, NULL, 0, 0, "--prompt",
                           "token %lld has id %d, but the model's embedding has only %lld rows (the tokenizer does not "
                           "fit the model)", (long long)i, id, (long long)g.table_rows);
            goto done;
        }
    }

    sampler_init(&s, g.vocab, r.temperature, r.top_k, r.top_p, (uint64_t)r.seed);
    have_sampler = true;
    /* at most one token per free position (and one from the full context's last row) */
    int64_t most = r.max_new < g.context ? r.max_new : g.context;
    logprobs = calloc((size_t)most + 1, sizeof *logprobs);
    KILN_ASSERT(logprobs != NULL);
    int32_t eos = kiln_tokenizer_special(&tok, KILN_SPECIAL_EOS);

    /* the prefill of this prompt's length, compiled now (the --stats time is its run alone) */
    if (r.max_new > 0 && !r.no_cache && !generator_prepare(&g, n_prompt, diags)) goto done;
    /* the prompt (as it will be continued: after truncation) */
    size_t shown = start ? (size_t)ends.v[start - 1] : 0; /* bytes of the prompt dropped by --truncate */
    if (!r.json) {
        fwrite(r.prompt + shown, 1, plen - shown, stdout);
        fflush(stdout);
    }
    /* the sequence so far, for --no-cache */
    int32_t *seq = calloc((size_t)g.context, sizeof *seq);
    KILN_ASSERT(seq != NULL);
    memcpy(seq, ids.v + start, (size_t)n_prompt * sizeof *seq);

    double t0 = progress_now();
    const float *logits = r.max_new > 0 ? generator_prefill(&g, seq, n_prompt, diags) : NULL;
    double t1 = progress_now();
    const char *stop = "max_new";
    int64_t pos = n_prompt;
    bool failed = r.max_new > 0 && !logits;
    for (int64_t k = 0; k < r.max_new && !failed; k++) {
        if (k > 0) {
            if (pos >= g.context) {
                stop = "context";
                break;
            }
            seq[pos] = out.v[out.n - 1];
            logits = r.no_cache ? generator_prefill(&g, seq, pos + 1, diags)
                                : generator_step(&g, out.v[out.n - 1], pos, diags);
            pos++;
            if (!logits) {
                failed = true;
                break;
            }
        }
        double lp;
        int64_t bad;
        int32_t id = sampler_pick(&s, logits, &lp, &bad);
        if (id < 0) {
            if (isnan(logits[bad]) || logits[bad] == INFINITY)
                kiln_diags_add(diags, NULL, 0, 0, NULL, "the logits of generated token %lld are not finite (%g at id "
                               "%lld): nothing can be sampled from them (do the weights hold NaN or inf?)",
                               (long long)k + 1, (double)logits[bad], (long long)bad);
            else
                kiln_diags_add(diags, NULL, 0, 0, NULL, "every logit of generated token %lld is -inf: nothing can be "
                               "sampled from them", (long long)k + 1);
            failed = true;
            break;
        }
        KILN_ASSERT(kiln_ids_push(&out, id));
        logprobs[out.n - 1] = lp;
        if (id == eos) {
            stop = "eos";
            break;
        }
        if (!r.json) {
            size_t n;
            const char *bytes = token_text(&tok, id, &n);
            fwrite(bytes, 1, n, stdout);
            fflush(stdout);
        }
    }
    double t2 = progress_now();
    double prefill_s = t1 - t0, decode_s = t2 - t1;
    if (!failed && r.stats && r.repeat > 1 && out.n > 0 && !r.no_cache)
        failed = !replay(&g, &s, seq, n_prompt, &out, r.repeat, &prefill_s, &decode_s, diags);
    free(seq);
    if (failed) goto done;
    if (!r.json) {
        printf("\n");
    } else {
        size_t n;
        printf("{\"prompt\": \"");
        json_str(stdout, r.prompt + shown, plen - shown);
        printf("\", \"text\": \"");
        char *all = kiln_tokenizer_decode(&tok, out.v, out.n, false, &n); /* whole characters across tokens */
        KILN_ASSERT(all != NULL);
        json_str(stdout, all, n);
        free(all);
        printf("\", \"tokens\": [");
        for (size_t i = 0; i < out.n; i++) {
            const char *b = token_text(&tok, out.v[i], &n);
            printf("%s\"", i ? ", " : "");
            json_str(stdout, b, n);
            printf("\"");
        }
        printf("], \"ids\": [");
        for (size_t i = 0; i < out.n; i++) printf("%s%d", i ? ", " : "", out.v[i]);
        printf("], \"logprobs\": [");
        for (size_t i = 0; i < out.n; i++) printf("%s%.9g", i ? ", " : "", logprobs[i]);
        printf("], \"prompt_tokens\": %lld, \"stop\": \"%s\"", (long long)n_prompt, stop);
        if (r.stats) {
            int64_t steps = out.n > 1 ? (int64_t)out.n - 1 : 0;
            printf(", \"prefill_ms\": %.4f, \"decode_ms\": %.4f, \"decode_steps\": %lld, \"repeat\": %lld",
                   prefill_s * 1e3, decode_s * 1e3, (long long)steps, (long long)r.repeat);
        }
        printf("}\n");
    }
    if (r.stats) {
        int64_t steps = out.n > 1 ? (int64_t)out.n - 1 : 0;
        const char *med = r.repeat > 1 ? " (median of the runs)" : "";
        fprintf(stderr, "prefill: %lld tokens in %.2f ms (context %lld)%s\n", (long long)n_prompt, prefill_s * 1e3,
                (long long)g.context, med);
        fprintf(stderr, "decode: %lld tokens in %.2f ms, %.1f tokens/s%s%s\n", (long long)steps, decode_s * 1e3,
                steps > 0 && decode_s > 0 ? (double)steps / decode_s : 0.0, r.no_cache ? " (no cache)" : "", med);
    }
    status = EXIT_OK;
done:
    free(logprobs);
    kiln_ids_free(&ids);
    kiln_ids_free(&ends);
    kiln_ids_free(&out);
    if (have_sampler) sampler_free(&s);
    if (have_gen) generator_free(&g);
    if (have_tok) kiln_tokenizer_free(&tok);
    kiln_tensor_file_free(&wf);
    free(text);
    return status;
}

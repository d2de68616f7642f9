/* progress.c — what `kiln train` shows while it runs.
 *
 * On a terminal (stderr is a tty) one line is redrawn in place with "\r…\033[K":
 *     step 120/1000  loss 2.3456  lr 3.00e-04  12.3k tok/s  ETA 1m23s
 * at most about ten times a second, so a fast tiny model does not spend its time
 * printing, and always on the last step. Anywhere else nothing is drawn (a log file
 * full of carriage returns helps no one).
 *
 * When stdout or stderr is not a terminal (a job's log, `kiln train … | tee`), plain
 * lines go to stdout instead, so a long run is never silent until its end:
 *     step 120/1000  loss 2.3456  lr 3.00e-04  12.3k tok/s  elapsed 9s  ETA 1m23s
 * after the first step, every --log-every steps (default a tenth of the run), on the
 * run's last step, and whenever a minute has passed since the last one; a validation
 * step's line ends with "val_loss 2.4567".
 *
 * --log gets one JSON object per step, written and flushed line by line so that
 * `tail -f` and a crash both see whole lines:
 *     {"step": 120, "loss": 2.345678, "lr": 0.0003, "tokens_per_s": 12345.6, "elapsed_s": 9.87}
 * with "val_loss" added on validation steps.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "train.h"

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void progress_start(progress *p, FILE *log, int64_t first, int64_t total, int64_t end, int64_t every)
{
    p->tty = isatty(fileno(stderr));
    p->plain = !p->tty || !isatty(fileno(stdout));
    p->log = log;
    p->first = first;
    p->total = total;
    p->end = end;
    p->every = every > 0 ? every : 1;
    p->t_start = progress_now();
    p->t_drawn = 0;
    p->t_plain = p->t_start;
}

enum { PLAIN_MAX_SILENCE_S = 60 };

bool progress_plain_due(const progress *p, int64_t step)
{
    return p->plain && (step == p->first + 1 || step % p->every == 0 || step == p->end ||
                        progress_now() - p->t_plain >= PLAIN_MAX_SILENCE_S);
}

/* "1h02m", "3m07s", "12s" */
static void format_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, size, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, size, "%lds", t);
}

/* "12.3k", "1.20M", "950" */
static void format_rate(double r, char *buf, size_t size)
{
    if (r >= 1e6) snprintf(buf, size, "%.2fM", r / 1e6);
    else if (r >= 1e3) snprintf(buf, size, "%.1fk", r / 1e3);
    else snprintf(buf, size, "%.0f", r);
}

/* JSON has no NaN or infinity: a diverged loss is written as null. */
static void json_number(FILE *f, const char *key, double v)
{
    if (isfinite(v)) fprintf(f, ", \"%s\": %.9g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

void progress_step(progress *p, int64_t step, double loss, double lr, double tokens_per_s, double val_loss)
{
    double now = progress_now();
    if (p->log) {
        fprintf(p->log, "{\"step\": %lld", (long long)step);
        json_number(p->log, "loss", loss);
        json_number(p->log, "lr", lr);
        json_number(p->log, "tokens_per_s", tokens_per_s);
        if (val_loss >= 0 || isnan(val_loss)) json_number(p->log, "val_loss", val_loss);
        json_number(p->log, "elapsed_s", now - p->t_start);
        fprintf(p->log, "}\n");
        fflush(p->log);
    }
    double per_step = (now - p->t_start) / (double)(step - p->first);
    char eta[32], rate[32], elapsed[32];
    format_duration(per_step * (double)(p->end - step), eta, sizeof eta);
    format_rate(tokens_per_s, rate, sizeof rate);
    if (progress_plain_due(p, step)) {
        p->t_plain = now;
        format_duration(now - p->t_start, elapsed, sizeof elapsed);
        if (p->tty) fprintf(stderr, "\r\033[K"); /* stdout may share the terminal's line */
        printf("step %lld/%lld  loss %.4f  lr %.2e  %s tok/s  elapsed %s  ETA %s", (long long)step,
               (long long)p->total, loss, lr, rate, elapsed, eta);
        if (val_loss >= 0 || isnan(val_loss)) printf("  val_loss %.4f", val_loss);
        printf("\n");
        fflush(stdout);
    }
    if (!p->tty || (now - p->t_drawn < 0.1 && step < p->end)) return;
    p->t_drawn = now;
    fprintf(stderr, "\rstep %lld/%lld  loss %.4f  lr %.2e  %s tok/s  ETA %s\033[K", (long long)step,
            (long long)p->total, loss, lr, rate, eta);
    fflush(stderr);
}

void progress_end(progress *p)
{
    if (p->tty && p->t_drawn > 0) fputc('\n', stderr);
    p->t_drawn = 0;
}

/* llmc_driver.c — llm.c's CPU training step (train_gpt2.c), timed on a given batch, for
 * llmc_bench.py. llm.c is not part of kiln: the script compiles this file against a
 * checkout of github.com/karpathy/llm.c that the user gives it (-I that checkout), and
 * this file takes llm.c's functions by including its train_gpt2.c whole, with its own
 * main() renamed away. Nothing of llm.c is copied here.
 *
 *   llmc_driver CHECKPOINT TOKENS B T STEPS LR
 *
 * CHECKPOINT: llm.c's model file (header of 256 int32: magic 20240326, version 3, maxT,
 * V, L, NH, C, Vp; then the parameters, float32, in its order). TOKENS: 2·B·T int32, the
 * inputs then the targets, row-major (B, T). Prints the loss of the first forward pass
 * (before any update: the same-model check) and then, per step (forward, zero_grad,
 * backward, AdamW update as train_gpt2.c's main calls them), "step N: M ms".
 */
#define main llmc_train_gpt2_main
#include "train_gpt2.c"
#undef main

static double seconds_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: llmc_driver CHECKPOINT TOKENS B T STEPS LR\n");
        return 2;
    }
    int B = atoi(argv[3]), T = atoi(argv[4]), steps = atoi(argv[5]);
    float lr = (float)atof(argv[6]);
    if (B <= 0 || T <= 0 || steps < 0) {
        fprintf(stderr, "llmc_driver: bad B, T or STEPS\n");
        return 2;
    }
    GPT2 model;
    gpt2_build_from_checkpoint(&model, argv[1]);
    size_t n = (size_t)B * (size_t)T;
    int *tokens = malloc(2 * n * sizeof(int));
    FILE *f = fopen(argv[2], "rb");
    if (!tokens || !f || fread(tokens, sizeof(int), 2 * n, f) != 2 * n) {
        fprintf(stderr, "llmc_driver: cannot read %zu tokens from %s\n", 2 * n, argv[2]);
        return 1;
    }
    fclose(f);
    gpt2_forward(&model, tokens, tokens + n, (size_t)B, (size_t)T);
    printf("loss %.9g\n", (double)model.mean_loss);
    for (int s = 0; s < steps; s++) {
        double t0 = seconds_now();
        gpt2_forward(&model, tokens, tokens + n, (size_t)B, (size_t)T);
        gpt2_zero_grad(&model);
        gpt2_backward(&model);
        gpt2_update(&model, lr, 0.9f, 0.999f, 1e-8f, 0.0f, s + 1);
        printf("step %d: %.3f ms (loss %.6f)\n", s, (seconds_now() - t0) * 1e3, (double)model.mean_loss);
        fflush(stdout);
    }
    gpt2_free(&model);
    free(tokens);
    return 0;
}

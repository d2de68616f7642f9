/* test_golden.h — golden text files: a pass's output compared with NAME.expected.txt,
 * which KILN_UPDATE_GOLDEN=1 rewrites instead (then review the diff before committing). */
#ifndef KILN_TEST_GOLDEN_H
#define KILN_TEST_GOLDEN_H

/* The whole file as a NUL-terminated string (free it), or NULL if it cannot be opened. */
char *golden_read_file(const char *path);

/* 0 if `got` equals the file at expected_path (or the file was rewritten); otherwise 1,
 * after printing both texts. */
int golden_check(const char *expected_path, const char *got);

#endif

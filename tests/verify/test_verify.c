/* Unit tests for the math answer verifier: hand-written expectations for each extraction and
 * normalisation rule (independent of the implementation). */
#include "fluxprm.h"
#include "harness.h"
#include <pthread.h>
#include <stdint.h>

static int eq_case(const char *a, const char *b, int want, const char *file, int line) {
    int got = fp_verify_equal(a, b);
    int back = fp_verify_equal(b, a);
    if (got != want || back != want) {
        fprintf(stderr, "  %s:%d: equal(\"%s\", \"%s\") = %d (reverse %d), want %d\n", file, line, a, b, got, back, want);
        th_case_failed = 1;
        return 0;
    }
    return 1;
}
#define EQ(a, b) eq_case(a, b, 1, __FILE__, __LINE__)
#define NE(a, b) eq_case(a, b, 0, __FILE__, __LINE__)

static int ex_case(const char *text, const char *want, const char *want_rule, const char *file, int line) {
    char *ans = NULL;
    const char *rule = NULL;
    int rc = fp_verify_extract(text, &ans, &rule);
    int ok = rc == 0 && ((want == NULL && ans == NULL) || (want && ans && !strcmp(ans, want))) &&
             !strcmp(rule, want_rule);
    if (!ok) {
        fprintf(stderr, "  %s:%d: extract(\"%s\") = \"%s\" [%s], want \"%s\" [%s]\n", file, line, text,
                ans ? ans : "(null)", rule, want ? want : "(null)", want_rule);
        th_case_failed = 1;
    }
    free(ans);
    return ok;
}
#define EX(t, w, r) ex_case(t, w, r, __FILE__, __LINE__)

static int test_extract_boxed(void) {
    EX("so the answer is $\\boxed{5}$.", "5", "boxed");
    EX("first \\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}", "boxed");
    EX("nested \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)} done", "\\left( 3, \\frac{\\pi}{2} \\right)", "boxed");
    EX("$\\boxed 5$", "5", "boxed");
    EX("\\fbox{x+1}", "x+1", "boxed");
    EX("\\boxed{\\text{(B)}}", "\\text{(B)}", "boxed");
    EX("\\boxed{{1,2}}", "{1,2}", "boxed");
    /* a truncated last box is skipped */
    EX("\\boxed{7} and then \\boxed{8", "7", "boxed");
    /* boxed wins over an earlier "answer is" */
    EX("The answer is 3. Wait, \\boxed{4}", "4", "boxed");
    return 0;
}

static int test_extract_gsm8k(void) {
    EX("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "7", "gsm8k_hash");
    EX("x\n#### 1,000", "1,000", "gsm8k_hash");
    EX("So she makes 9 * 2 = $18.\nA: 18", "18", "answer_is");
    EX("Step 1\nStep 2\nThe answer is 42.", "42", "answer_is");
    EX("Thus the final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}", "answer_is");
    EX("**Answer:** 12", "12", "answer_is");
    EX("We add 3 and 4 to get 7 and then multiply by 2 to get 14 cookies in all", "14", "last_number");
    EX("The value is -2.5 after 3 steps of the long computation, which ends with 1,234 items", "1,234", "last_number");
    return 0;
}

static int test_extract_bare(void) {
    EX("  25 ", "25", "bare");
    EX("$\\frac{1}{2}$", "\\frac{1}{2}", "bare");
    EX("5.4 \\text{ cents}", "5.4 \\text{ cents}", "bare");
    EX("\\text{Evelyn}", "\\text{Evelyn}", "bare");
    EX("", NULL, "none");
    EX("no numbers in this long sentence at all here", NULL, "none");
    return 0;
}

static int test_numbers(void) {
    EQ("5", "5.0");
    EQ("5", "5.");
    EQ("0.5", "\\frac{1}{2}");
    EQ("\\dfrac12", "1/2");
    EQ("\\tfrac{3}{4}", "0.75");
    EQ("\\frac 59", "5/9");
    EQ("1,000", "1000");
    EQ("1{,}000", "1000");
    EQ("10,\\!080", "10080");
    EQ("11,\\! 111,\\! 111,\\! 100", "11111111100");
    EQ("-3", "- 3");
    EQ(".5", "0.5");
    EQ("1.5e3", "1500");
    EQ("1.5 \\times 10^{3}", "1500");
    EQ("2\\frac{1}{2}", "2.5");
    EQ("2\\frac{1}{2}", "\\frac{5}{2}");
    EQ("-1\\frac{4}{5}", "-9/5");
    EQ("0.333333", "\\frac{1}{3}"); /* within the 1e-6 relative tolerance */
    NE("0.333", "\\frac{1}{3}");
    NE("5", "6");
    NE("0.0000672", "0.0000673");
    NE("1,000", "1");
    EQ("\\sqrt{2}", "2^{1/2}");
    EQ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt3}");
    EQ("2\\sqrt{5}", "\\sqrt{20}");
    EQ("\\sqrt[3]{8}", "2");
    EQ("12\\pi", "12 \\pi");
    EQ("\\pi", "3.14159265358979");
    NE("\\pi", "3.14");
    EQ("e^2", "\\exp(2)");
    EQ("\\ln(e)", "1");
    EQ("5!", "120");
    return 0;
}

static int test_latex_cleanup(void) {
    EQ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})");
    EQ("\\text{Evelyn}", "Evelyn");
    EQ("\\textbf{east}", "East");
    EQ("\\mathrm{12}", "12");
    EQ("90^\\circ", "90");
    EQ("90^{\\circ}", "90^\\circ");
    EQ("90°", "90");
    EQ("50\\%", "50");
    EQ("50%", "0.5");
    NE("50", "0.5");
    EQ("\\$18.90", "18.9");
    EQ("\\$32,\\!348", "32348");
    EQ("5.4 \\text{ cents}", "5.4");
    EQ("15\\mbox{ cm}^2", "15");
    EQ("864 \\mbox{ inches}^2", "864");
    EQ("\\text{(B)}", "B");
    EQ("(C)", "C");
    NE("(B)", "C");
    EQ("x \\in [-2,7]", "[-2,7]");
    EQ("\\displaystyle\\frac{1}{4}", "0.25");
    EQ("3\\,000", "3000");
    return 0;
}

static int test_structures(void) {
    NE("(1,2)", "(2,1)");
    EQ("(1,2)", "(1, 2)");
    EQ("(1,2)", "\\left(1,\\frac{4}{2}\\right)");
    EQ("\\{1,2\\}", "\\{2,1\\}");
    EQ("\\{1,2\\}", "2, 1");
    EQ("3, 5, 7", "7,5,3");
    NE("3, 5, 7", "3, 5");
    NE("(3,4]", "(3,4)");
    NE("[3,4)", "(3,4)");
    EQ("(3,4]", "\\left(3,4\\right]");
    EQ("(-\\infty, 0]", "(-\\infty,0]");
    EQ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)");
    NE("(-\\infty, 2) \\cup (3, \\infty)", "(-\\infty, 2)");
    EQ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}");
    EQ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1-\\sqrt5, 1+\\sqrt5");
    EQ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}");
    NE("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}");
    EQ("\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", "\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}");
    return 0;
}

static int test_equations(void) {
    EQ("x=5", "5");
    EQ("x = 5", "x=5");
    EQ("5", "k = 5");
    NE("x=5", "6");
    EQ("y = 2x + 3", "y=3+2x");
    EQ("y = -2x", "-2x");
    EQ("5x - 7y + 11z + 4 = 0", "5x-7y+11z=-4");
    EQ("5x - 7y + 11z + 4 = 0", "-10x+14y-22z-8=0");
    NE("5x - 7y + 11z + 4 = 0", "5x-7y+11z-4=0");
    return 0;
}

static int test_algebra(void) {
    EQ("2x+2", "2(x+1)");
    EQ("(a+5)(b+2)", "ab+2a+5b+10");
    NE("(a+5)(b+2)", "ab+2a+5b+11");
    EQ("x^2-1", "(x-1)(x+1)");
    NE("x^2-1", "(x-1)^2");
    EQ("\\frac{11+9a}{20}", "\\frac{11}{20}+\\frac{9a}{20}");
    EQ("p - q", "-q+p");
    NE("p - q", "q - p");
    EQ("\\cot x", "\\frac{\\cos x}{\\sin x}");
    EQ("\\sin^2 x + \\cos^2 x", "1");
    EQ("6r^2-4r-24", "2(3r^2-2r-12)");
    EQ("x^{2}", "x^2");
    NE("x", "y");
    NE("2k", "2k+2");
    EQ("2 \\cdot 3", "6");
    EQ("\\frac{20000}{\\pi}", "20000/\\pi");
    EQ("1+2i", "2i+1");
    EQ("3R^2", "3 R^2");
    return 0;
}

static int test_text_answers(void) {
    EQ("\\text{east}", "east");
    NE("x", "X"); /* variables are case-sensitive */
    NE("(B)", "b");
    NE("\\text{east}", "seat");
    NE("\\text{Evelyn}", "\\text{Navin}");
    EQ("\\text{ellipse}", "ellipse.");
    NE("204_5", "204_6");
    EQ("4210_{5}", "4210_5");
    return 0;
}

static int test_check(void) {
    int ok = -1;
    char *ex = NULL;
    const char *rule = NULL;
    CHECK_OK(fp_verify_check("Janet sells 9 eggs.\nA: 18", "blah <<9*2=18>>18\n#### 18", &ok, &ex, &rule));
    CHECK(ok == 1);
    CHECK(ex && !strcmp(ex, "18"));
    CHECK(!strcmp(rule, "answer_is"));
    free(ex);
    CHECK_OK(fp_verify_check("So it is \\boxed{\\dfrac{14}{3}}.", "\\frac{14}{3}", &ok, NULL, NULL));
    CHECK(ok == 1);
    CHECK_OK(fp_verify_check("So it is \\boxed{\\dfrac{14}{5}}.", "\\frac{14}{3}", &ok, NULL, NULL));
    CHECK(ok == 0);
    CHECK_OK(fp_verify_check("", "5", &ok, &ex, &rule));
    CHECK(ok == 0 && ex == NULL && !strcmp(rule, "none"));
    CHECK(fp_verify_check(NULL, "5", &ok, NULL, NULL) == FP_EINVAL);
    CHECK(fp_verify_equal(NULL, "5") == 0);
    CHECK(fp_verify_equal("", "") == 0);
    return 0;
}

/* Random token soup: the verifier must never crash or hang (run under `make asan` too). */
static int test_fuzz_no_crash(void) {
    static const char *tok[] = {"\\frac", "\\dfrac", "{", "}", "(", ")", "[", "]", "\\{", "\\}", "\\left", "\\right",
                                "1", "23", "0.5", ",", "x", "y", "e", "i", "^", "_", "+", "-", "*", "/", "=", "\\sqrt",
                                "\\pi", "\\boxed{", "####", "A: ", "The answer is ", "\\text{", "%", "\\%", "$", " ",
                                "\\pm", "\\cup", "\\begin{pmatrix}", "&", "\\\\", "\\end{pmatrix}", "!", "|",
                                "\\sin", "\\log_", "^\\circ", "{,}", "cm", "\n", ".", "\\infty", "\\"};
    const int ntok = (int)(sizeof tok / sizeof tok[0]);
    uint64_t st = 12345;
    char a[512], b[512];
    for (int it = 0; it < 20000; it++) {
        char *bufs[2] = {a, b};
        for (int k = 0; k < 2; k++) {
            char *w = bufs[k];
            w[0] = 0;
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            int len = (int)((st >> 33) % 24);
            for (int t = 0; t < len; t++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                strcat(w, tok[(st >> 33) % (uint64_t)ntok]);
            }
        }
        (void)fp_verify_equal(a, b);
        int ok;
        char *ex = NULL;
        CHECK_OK(fp_verify_check(a, b, &ok, &ex, NULL));
        free(ex);
    }
    /* pathological nesting and length */
    static char deep[20000];
    memset(deep, '(', 9000);
    memset(deep + 9000, ')', 9000);
    deep[18000] = 0;
    CHECK(fp_verify_equal(deep, deep) == 1);
    memset(deep, '-', 19000);
    deep[19000] = '1';
    deep[19001] = 0;
    (void)fp_verify_equal(deep, "1");
    for (int i = 0; i < 9000; i++) memcpy(deep + 2 * i, "1,", 2);
    deep[17999] = 0;
    (void)fp_verify_equal(deep, deep + 2);
    return 0;
}

/* The same comparisons from several threads at once give the single-threaded answers. */
static const char *mt_pairs[][2] = {
    {"2x+2", "2(x+1)"}, {"\\frac{1}{2}", "0.5"}, {"(1,2)", "(2,1)"}, {"\\{1,2\\}", "\\{2,1\\}"},
    {"x^2-1", "(x-1)^2"}, {"50\\%", "0.5"}, {"\\sqrt{2}", "1.4142"}, {"y=2x+3", "2x+3=y"},
};
#define MT_N ((int)(sizeof mt_pairs / sizeof mt_pairs[0]))
static int mt_want[MT_N];
static void *mt_worker(void *arg) {
    long bad = 0;
    for (int it = 0; it < 300; it++)
        for (int i = 0; i < MT_N; i++)
            if (fp_verify_equal(mt_pairs[i][0], mt_pairs[i][1]) != mt_want[i]) bad++;
    *(long *)arg = bad;
    return NULL;
}
static int test_threads(void) {
    for (int i = 0; i < MT_N; i++) mt_want[i] = fp_verify_equal(mt_pairs[i][0], mt_pairs[i][1]);
    pthread_t th[4];
    long bad[4] = {0};
    for (int t = 0; t < 4; t++) CHECK(pthread_create(&th[t], NULL, mt_worker, &bad[t]) == 0);
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        CHECK(bad[t] == 0);
    }
    return 0;
}

int main(void) {
    RUN(test_extract_boxed);
    RUN(test_extract_gsm8k);
    RUN(test_extract_bare);
    RUN(test_numbers);
    RUN(test_latex_cleanup);
    RUN(test_structures);
    RUN(test_equations);
    RUN(test_algebra);
    RUN(test_text_answers);
    RUN(test_check);
    RUN(test_fuzz_no_crash);
    RUN(test_threads);
    return th_finish();
}

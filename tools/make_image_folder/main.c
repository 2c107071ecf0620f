/* make_image_folder: writes an ImageNet-style folder of generated PNG/JPEG images (every
 * PNG mode prep must read, baseline/progressive/grey JPEG) plus the bad files prep must
 * skip, for trying `twotower prep` by hand. The tests call imgfix_make_folder directly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imgfix.h"

int main(int argc, char **argv)
{
    int classes = 4, per_class = 16, with_bad = 1;
    unsigned long long seed = 1;
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--classes") == 0 && i + 1 < argc)
            classes = atoi(argv[++i]);
        else if (strcmp(argv[i], "--per-class") == 0 && i + 1 < argc)
            per_class = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--no-bad") == 0)
            with_bad = 0;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            fprintf(stderr, "make_image_folder: unknown argument %s\n", argv[i]);
            dir = NULL;
            break;
        }
    }
    if (!dir || classes < 1 || classes > 1000 || per_class < 1 || per_class > 100000) {
        fprintf(stderr, "usage: make_image_folder DIR [--classes N (1..1000)] "
                        "[--per-class N] [--seed S] [--no-bad]\n");
        return 2;
    }
    int good, bad;
    if (imgfix_make_folder(dir, classes, per_class, seed, with_bad, &good, &bad) != 0) {
        fprintf(stderr, "make_image_folder: failed writing %s\n", dir);
        return 1;
    }
    printf("%s: %d classes, %d good images, %d bad files\n", dir, classes, good, bad);
    return 0;
}

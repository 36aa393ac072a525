# Alertmanager does not read environment variables in its configuration: this renders ${NAME}
# references from the environment before it starts (compose runs it in the alertmanager container,
# the tests run it here), so secrets stay out of the repository. POSIX awk (busybox, mawk, gawk).
# Usage: awk -f render-config.awk alertmanager.yml > /tmp/alertmanager.yml
# A reference to an unset or empty variable stops with exit status 1 and names the variable (never a
# value). Comment lines are copied as they are.
/^[ \t]*#/ { print; next }
{
    line = $0
    out = ""
    while (match(line, /\$\{[A-Za-z_][A-Za-z0-9_]*\}/)) {
        name = substr(line, RSTART + 2, RLENGTH - 3)
        if (ENVIRON[name] == "") {
            printf "render-config: %s is not set (referenced on line %d of %s)\n", name, FNR, FILENAME > "/dev/stderr"
            failed = 1
            exit 1
        }
        out = out substr(line, 1, RSTART - 1) ENVIRON[name]
        line = substr(line, RSTART + RLENGTH)
    }
    print out line
}
END { if (failed) exit 1 }

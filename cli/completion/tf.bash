# bash completion for tf, the TameFlare for Linux command-line tool.
# Installed as <datadir>/bash-completion/completions/tf; it needs only bash
# (not the bash-completion package's helpers). Gateway names, agent ids and
# approval ids are asked from the running daemon (tf ... list -q), with the
# --socket and -c given on the line being completed.

# Options that take a value, for every command: their values are not operands.
_tf_value_options='-c --config --socket --state-dir --connectors-dir --gateways-dir --gateway --name --isolation
--cgroup --unit --agent --body --content-type --requests --connector --since --until --action --decision --event
--limit --last --format --output --key --note --scope --reason'

# The options each command (or command and verb) takes.
_tf_options() {
    local connection='--socket -c --config --json -h --help'
    local filters='--since --until --gateway --agent --connector --action --decision'
    case "$1" in
        status | reload) echo "$connection" ;;
        gateways | agents) echo "$connection -q --quiet" ;;
        approvals) echo "$connection -q --quiet --note" ;;
        kill-switch) echo "$connection --scope --reason" ;;
        logs) echo "$connection -f --follow --last --format $filters" ;;
        metrics) echo '--socket -c --config -h --help' ;;
        run) echo '--gateway --name --isolation --socket -c --config -h --help' ;;
        enforce) echo '--gateway --cgroup --unit --name --release --socket -c --config -h --help' ;;
        doctor) echo '--gateway --socket -c --config -h --help' ;;
        policy) echo '--gateway --agent --body --content-type --requests --json --exit-code --since --output --force --socket -c --config --connectors-dir --gateways-dir -h --help' ;;
        connectors) echo '-c --config --connectors-dir --gateways-dir -h --help' ;;
        vault) echo '--connector --json --socket --state-dir -c --config -h --help' ;;
        traffic) echo "--limit --format --output --force --socket --state-dir -c --config -h --help $filters" ;;
        audit) echo '--since --until --gateway --agent --event --action --limit --format --output --force --key --socket --state-dir -c --config -h --help' ;;
    esac
}

# The verbs of a command.
_tf_verbs() {
    case "$1" in
        gateways) echo 'list show set-enforcement' ;;
        agents) echo 'list show stop' ;;
        approvals) echo 'list show approve deny watch' ;;
        kill-switch) echo 'show on off' ;;
        policy) echo 'check test suggest' ;;
        connectors) echo 'list show' ;;
        vault) echo 'set list remove rotate' ;;
        traffic) echo 'query export' ;;
        audit) echo 'query export verify' ;;
    esac
}

# tf with the line's --socket and -c, quietly; for names and ids. With
# --config-only first, only -c is passed on (for commands that read files).
_tf_ask() {
    local -a connection=()
    local i word sockets=1
    if [[ $1 == --config-only ]]; then
        sockets=
        shift
    fi
    # `words` and `cword` are _tf's.
    for ((i = 1; i < cword; i++)); do
        word=${words[i]}
        case "$word" in
            -c | --config) connection+=("$word" "${words[i + 1]}") ;;
            --config=*) connection+=("$word") ;;
            --socket) [[ -n $sockets ]] && connection+=("$word" "${words[i + 1]}") ;;
            --socket=*) [[ -n $sockets ]] && connection+=("$word") ;;
        esac
    done
    "${words[0]}" "$@" "${connection[@]}" 2>/dev/null
}

# COMPREPLY from compgen's lines (names with spaces stay whole).
_tf_reply() {
    mapfile -t COMPREPLY < <(compgen "$@")
}

_tf() {
    # The words from the line itself, split at blanks only: bash's COMP_WORDS
    # also splits at ':' and '=' (gateway:NAME, --format=csv).
    local line=${COMP_LINE:0:COMP_POINT}
    local -a words
    read -ra words <<<"$line"
    [[ -z $line || $line == *[[:space:]] ]] && words+=("")
    local cword=$((${#words[@]} - 1))
    local cur=${words[cword]}
    local prev=${words[cword - 1]}
    COMPREPLY=()

    # A `--option=value` word: complete the value (bash replaces what follows '=').
    if [[ $cur == --*=* ]]; then
        prev=${cur%%=*}
        cur=${cur#*=}
    fi

    _tf_complete
    # Bash replaces only what follows the last ':' of the word; drop what comes before it.
    if [[ $cur == *:* && $COMP_WORDBREAKS == *:* ]]; then
        local prefix=${cur%"${cur##*:}"} i
        local -a kept=()
        for i in "${COMPREPLY[@]}"; do
            [[ -n ${i#"$prefix"} ]] && kept+=("${i#"$prefix"}")
        done
        COMPREPLY=("${kept[@]}")
    fi
}

# Fills COMPREPLY for _tf's words, cword, cur and prev.
_tf_complete() {
    # The command and its operands so far, skipping options and their values.
    local -a operands=()
    local i word skip=
    for ((i = 1; i < cword; i++)); do
        word=${words[i]}
        if [[ -n $skip ]]; then
            skip=
            continue
        fi
        if [[ $word == -- ]]; then
            operands+=(--)
            break
        fi
        if [[ $word == -* ]]; then
            [[ $word != *=* && " ${_tf_value_options//$'\n'/ } " == *" $word "* ]] && skip=1
            continue
        fi
        operands+=("$word")
    done
    local command=${operands[0]} verb=${operands[1]}

    # After `tf run ... --`: the agent's command line.
    if [[ " ${operands[*]} " == *" -- "* ]]; then
        _tf_reply -c -- "$cur"
        return
    fi

    # Values of options.
    case "$prev" in
        -c | --config | --body | --requests | --output | --key | --socket)
            compopt -o filenames 2>/dev/null
            _tf_reply -f -- "$cur"
            return
            ;;
        --state-dir | --connectors-dir | --gateways-dir | --cgroup)
            compopt -o filenames 2>/dev/null
            _tf_reply -d -- "$cur"
            return
            ;;
        --gateway)
            _tf_reply -W "$(_tf_ask gateways list -q)" -- "$cur"
            return
            ;;
        --agent)
            _tf_reply -W "$(_tf_ask agents list -q)" -- "$cur"
            return
            ;;
        --isolation)
            _tf_reply -W 'netns cgroup' -- "$cur"
            return
            ;;
        --format)
            _tf_reply -W 'table csv jsonl' -- "$cur"
            return
            ;;
        --decision)
            _tf_reply -W 'allowed denied pending_approval rate_limited kill_switch would_deny
                would_require_approval would_rate_limit approved approval_timeout error' -- "$cur"
            return
            ;;
        --scope)
            local -a scopes=(all)
            local name
            for name in $(_tf_ask gateways list -q); do scopes+=("gateway:$name"); done
            _tf_reply -W "${scopes[*]} gateway: connector:" -- "$cur"
            return
            ;;
        --name | --unit | --connector | --action | --event | --since | --until | --last | --limit | --note | \
            --reason | --content-type)
            return
            ;;
    esac

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            _tf_reply -W '--help --version' -- "$cur"
        else
            _tf_reply -W 'status gateways reload agents approvals kill-switch logs metrics run enforce
                doctor policy connectors vault traffic audit' -- "$cur"
        fi
        return
    fi

    if [[ $cur == -* ]]; then
        _tf_reply -W "$(_tf_options "$command")" -- "$cur"
        return
    fi

    local verbs
    verbs=$(_tf_verbs "$command")
    if [[ -n $verbs && ${#operands[@]} -eq 1 ]]; then
        _tf_reply -W "$verbs" -- "$cur"
        return
    fi

    # Operands of a verb.
    case "$command $verb ${#operands[@]}" in
        "gateways show 2" | "gateways set-enforcement 2")
            _tf_reply -W "$(_tf_ask gateways list -q)" -- "$cur"
            ;;
        "gateways set-enforcement 3")
            _tf_reply -W 'monitor soft full default' -- "$cur"
            ;;
        "agents show 2" | "agents stop 2")
            _tf_reply -W "$(_tf_ask agents list -q)" -- "$cur"
            ;;
        "approvals show 2" | "approvals approve 2" | "approvals deny 2")
            _tf_reply -W "$(_tf_ask approvals list -q)" -- "$cur"
            ;;
        "connectors show 2")
            _tf_reply -W "$(_tf_ask --config-only connectors list | awk 'NR > 1 { print $1 }')" -- "$cur"
            ;;
    esac
}

complete -F _tf tf

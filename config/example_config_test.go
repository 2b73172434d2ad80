package config_test

import (
	"errors"
	"fmt"

	"github.com/finproxy/finproxy/config"
)

func ExampleParse() {
	cfg, err := config.Parse([]byte(`
description = "drop the client's ACK of the server's FIN, once"

[target]
port = 8080

[[rule]]
name = "drop-final-ack"
side = "client"
flags = "pure-ack"
phase = "ack-of-server-fin"
nth = 1
action = "drop"
`), "configs/lost-final-ack.toml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: port %d, %s hook, queue %d, queues %s segments\n",
		cfg.Name, cfg.Target.Port, cfg.Target.Hook, cfg.Target.Queue, cfg.QueueScope())
	for _, r := range cfg.Rules {
		fmt.Printf("%s (line %d): %s the %dst pure ACK from the %s in phase %s\n",
			r.Name, r.Pos.Line, r.ActionName, r.Match.Nth, r.Match.Side, r.Match.Phases)
	}
	// Output:
	// lost-final-ack: port 8080, local hook, queue 7400, queues from-fin segments
	// drop-final-ack (line 7): drop the 1st pure ACK from the client in phase ack-of-server-fin
}

func ExampleParse_errors() {
	_, err := config.Parse([]byte(`
[target]
port = 70000

[[rule]]
name = "delay-fin"
has_flags = "FIN|AKC"
action = "delay"
dealy = "200ms"
`), "my.toml")
	fmt.Println(err)

	// Each problem is a *ConfigError with its position and key path.
	var errs config.ConfigErrors
	if errors.As(err, &errs) {
		fmt.Println(len(errs), "problems; the first is", errs[0].Key, "at line", errs[0].Pos.Line)
	}
	// Output:
	// my.toml:3:8: target.port: 70000 is out of range: want a TCP port, 1 to 65535
	// my.toml:7:13: rule[1].has_flags: unknown TCP flag "AKC" (want SYN, FIN, RST, PSH, ACK, URG, ECE or CWR)
	// my.toml:9:1: rule[1].dealy: unknown key (did you mean delay?)
	// 3 problems; the first is target.port at line 3
}

func ExampleLoad() {
	cfg, err := config.Load("testdata/good/full.toml")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Name+":", cfg.Description)
	fmt.Println("addresses:", cfg.Target.Addresses)
	for _, r := range cfg.Rules {
		fmt.Println(r.Name, r.ActionName)
	}
	// Output:
	// everything: every key of the format
	// addresses: [198.18.2.2/32 fd00::2/128 198.18.0.0/16]
	// drop-final-ack drop
	// hold-server-fin hold
	// delay-data delay
	// merge-ack merge
}

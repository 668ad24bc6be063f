package acl

// Verdict is what Decide made of a packet.
type Verdict uint8

// Verdicts. Only Deny drops the packet.
const (
	Deny          Verdict = iota // no rule allows it and it answers no tracked flow
	AllowRule                    // a rule of its direction allows it (its flow is tracked)
	AllowReply                   // it answers a tracked flow the other side opened
	AllowRelated                 // an ICMP error about a tracked flow
	AllowFragment                // a non-first fragment (decision 0009)
)

func (v Verdict) String() string {
	return [...]string{"deny", "rule", "reply", "related", "fragment"}[v]
}

// Decide judges f in direction d against s and the session's connection
// table ct, tracking what it allows; gen is the generation of s (it changes
// whenever the session's rules are replaced, so flows opened under older
// rules are checked again). rule is the deciding rule for AllowRule. now is
// in unix nanoseconds. It does not allocate.
func (s *Set) Decide(d Dir, f *Flow, ct *Table, gen uint32, now int64) (v Verdict, rule int32) {
	if f.Fragment {
		return AllowFragment, NoRule
	}
	if r := s.Match(d, f); r != NoRule {
		if trackable(f) {
			ct.track(d, f, gen, now)
		}
		return AllowRule, r
	}
	if f.Quoted && ct.related(d, f, now) {
		return AllowRelated, NoRule
	}
	if trackable(f) && ct.reply(s, d, f, gen, now) {
		return AllowReply, NoRule
	}
	return Deny, NoRule
}

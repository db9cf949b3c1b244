namespace Portcullis.SmtpCore.Server;

// A reply that is either known now or still on its way (a command pipelined to the
// downstream, RFC 2920). The session resolves pending replies in order before it answers
// anything that must end a pipelining group.
public readonly struct SmtpResponse
{
    private readonly SmtpReply? _reply;
    private readonly Task<SmtpReply>? _pending;

    public SmtpResponse(SmtpReply reply) { _reply = reply; _pending = null; }
    public SmtpResponse(Task<SmtpReply> pending) { _reply = null; _pending = pending; }

    public bool IsPending => _pending is not null;

    // The reply when it is known now: no task is made for it.
    internal SmtpReply? Known => _reply;

    public Task<SmtpReply> GetAsync() => _pending ?? Task.FromResult(_reply!);

    public static implicit operator SmtpResponse(SmtpReply reply) => new(reply);
}

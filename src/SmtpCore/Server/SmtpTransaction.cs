using System.Buffers;
using Portcullis.SmtpCore.Protocol;

namespace Portcullis.SmtpCore.Server;

// One mail transaction (RFC 5321 §3.3): MAIL, RCPTs, content. Disposed by RSET, a new
// HELO/EHLO, the end of the message, or the end of the session.
public sealed class SmtpTransaction
{
    internal SmtpTransaction(SmtpPath reversePath, IReadOnlyList<KeyValuePair<string, string?>> parameters)
    {
        ReversePath = reversePath;
        MailParameters = parameters;
    }

    public SmtpPath ReversePath { get; }
    public IReadOnlyList<KeyValuePair<string, string?>> MailParameters { get; }
    public List<SmtpRecipient> Recipients { get; } = new(1);   // most mail has one recipient
    public BodyType Body { get; internal set; } = BodyType.SevenBit;
    public bool SmtpUtf8 { get; internal set; }
    public long? DeclaredSize { get; internal set; }
    public string? DsnRet { get; internal set; }
    public string? DsnEnvId { get; internal set; }
    public string? AuthParameter { get; internal set; }   // MAIL FROM:<...> AUTH=<mailbox> (RFC 4954 §5)

    // Where the content goes, supplied by the handler; and whatever the handler keeps per message.
    public IBufferWriter<byte>? Content { get; internal set; }
    public object? HandlerState { get; set; }

    // The session's own refusal of the content (552 size, 550 bare newline), for the handler's log.
    public SmtpReply? ContentRefusal { get; internal set; }

    // The session's own refusal of a command in this transaction because a limit was hit (452 too
    // many recipients, 421 too many errors), for the handler's log when the transaction ends.
    public SmtpReply? LimitRefusal { get; internal set; }

    // Set while MAIL's own reply is still outstanding (pipelined to the downstream).
    internal bool MailPending { get; set; }
    internal bool Failed { get; set; }
    internal bool ContentHandlerFailed { get; set; }   // OnContentArrivedAsync threw: 451 when the message ends
    internal int InFlightRecipients { get; set; }
}

public sealed record SmtpRecipient(SmtpPath Path, IReadOnlyList<KeyValuePair<string, string?>> Parameters);

public enum BodyType { SevenBit, EightBitMime, BinaryMime }

namespace Portcullis.SmtpCore.Downstream;

// The downstream connection failed or refused us; Reply is set when the server said why.
public sealed class DownstreamException : Exception
{
    public DownstreamException(string message, SmtpReply? reply = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Reply = reply;
    }

    public SmtpReply? Reply { get; }
}

namespace Portcullis.SmtpCore;

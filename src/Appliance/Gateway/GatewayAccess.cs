// Everything about access that is read from files at start-up: relay rules, the certificate,
// the password file. Both `run` and `check-config` load it, so a missing or broken file is
// reported before the gateway takes connections.
using Portcullis.Appliance.Access;
using Portcullis.Appliance.Auth;
using Portcullis.Appliance.Configuration;

namespace Portcullis.Appliance.Gateway;

internal sealed record GatewayAccess(RelayPolicy Relay, TlsCertificates? Tls, WatchedFile<PasswdFile>? Passwords)
{
    // Throws InvalidDataException naming the section, key and file.
    public static GatewayAccess Load(GatewayConfig config)
    {
        var tlsListener = config.General.Interfaces.FirstOrDefault(i => i.Tls);
        if (tlsListener is not null && !config.Tls.Enabled)
            throw new InvalidDataException($"[general] interfaces: {tlsListener} needs a certificate; expected [tls] certificate and key to be set");
        var relay = new RelayPolicy(config.Relay);
        var tls = config.Tls.Enabled ? new TlsCertificates(config.Tls) : null;
        WatchedFile<PasswdFile>? passwords = null;
        if (config.Auth.PasswdFile.Length > 0)
        {
            if (!File.Exists(config.Auth.PasswdFile))
                throw new InvalidDataException($"[auth] passwd_file = {config.Auth.PasswdFile}: the file does not exist");
            passwords = PasswdFile.Watch(config.Auth.PasswdFile);
        }
        if (config.General.SmtpServerTls != SmtpServerTlsMode.None) TlsCertificates.ClientOptions(config.General);
        return new GatewayAccess(relay, tls, passwords);
    }
}

// Two namespaces that use each other, for NamespaceCycleTests: Receiver → Sender through a field
// type, Sender → Receiver only through a call in a method body. Bystander uses only itself.
namespace Portcullis.Appliance.Tests.Architecture.Fixture.Receiver
{
    internal sealed class Mailbox
    {
        public Sender.Postman? LastVisit { get; set; }

        public static int Count(string text) => text.Length;
    }
}

namespace Portcullis.Appliance.Tests.Architecture.Fixture.Sender
{
    internal sealed class Postman
    {
        public int Deliver(string letter) => Receiver.Mailbox.Count(letter) + 1;
    }
}

namespace Portcullis.Appliance.Tests.Architecture.Fixture.Bystander
{
    internal sealed class Walker
    {
        public int Steps(int n) => n * 2;
    }
}
